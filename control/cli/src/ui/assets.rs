//! The dashboard's page: HTML, CSS and plain JavaScript, embedded in the binary (no Node, no
//! build step, nothing fetched from elsewhere).

/// The page.
pub(super) const INDEX_HTML: &str = include_str!("assets/index.html");
/// Its styles.
pub(super) const STYLE_CSS: &str = include_str!("assets/style.css");
/// Its script: polls the API, draws the views, reads the event stream.
pub(super) const APP_JS: &str = include_str!("assets/app.js");

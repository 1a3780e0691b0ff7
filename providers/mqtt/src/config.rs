//! What a link's configuration says: the broker, the quality of service and, for deliveries,
//! the topic filters.

use std::collections::BTreeMap;
use std::path::PathBuf;

use lattice_provider_sdk::ProviderError;
use rumqttc::QoS;

/// The broker when a link names none: the gateway's own.
pub const DEFAULT_URI: &str = "mqtt://127.0.0.1:1883";

/// A broker as a link names it: `mqtt://[user:password@]host[:port]` (or `tcp://`), and over
/// TLS `mqtts://` (or `ssl://`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct BrokerAddr {
    pub host: String,
    pub port: u16,
    pub credentials: Option<(String, String)>,
    /// Whether the connection is TLS (`mqtts://`, `ssl://`).
    pub tls: bool,
}

impl BrokerAddr {
    pub fn parse(uri: &str) -> Result<Self, ProviderError> {
        let invalid = |why: &str| ProviderError::Other(format!("MQTT uri `{uri}`: {why}"));
        let plain = uri
            .strip_prefix("mqtt://")
            .or_else(|| uri.strip_prefix("tcp://"));
        let tls = uri
            .strip_prefix("mqtts://")
            .or_else(|| uri.strip_prefix("ssl://"));
        let (rest, is_tls) = match (plain, tls) {
            (Some(rest), _) => (rest, false),
            (None, Some(rest)) => (rest, true),
            (None, None) => {
                return Err(invalid(
                    "expected mqtt://host[:port] (or tcp://), or mqtts://host[:port] (or ssl://) for TLS",
                ));
            }
        };
        let default_port = if is_tls { 8883 } else { 1883 };
        let rest = rest.trim_end_matches('/');
        if rest.contains(['/', '?', '#']) {
            return Err(invalid("a broker address has no path or query"));
        }
        let (credentials, hostport) = match rest.rsplit_once('@') {
            Some((userinfo, hostport)) => {
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                (Some((user.to_string(), password.to_string())), hostport)
            }
            None => (None, rest),
        };
        // `[::1]:1883`: the port follows the bracket.
        let (host, port) = match hostport.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => {
                let port = port
                    .parse()
                    .map_err(|_| invalid("the port is not a number"))?;
                (host, port)
            }
            _ => (hostport, default_port),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(invalid("no host"));
        }
        Ok(Self {
            host: host.to_string(),
            port,
            credentials,
            tls: is_tls,
        })
    }
}

// Written by hand so that a password never reaches a log line.
impl std::fmt::Display for BrokerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

impl std::fmt::Debug for BrokerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// The PEM files of a TLS connection, as a link's config names them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// `tls_ca`: the CA certificates to trust instead of the system's roots.
    pub ca: Option<PathBuf>,
    /// `tls_cert` and `tls_key`: the client's certificate chain and key, for brokers that ask.
    pub client: Option<(PathBuf, PathBuf)>,
}

/// One end's configuration of a link.
#[derive(Debug, Clone)]
pub struct Settings {
    pub broker: BrokerAddr,
    pub client_id: Option<String>,
    pub qos: QoS,
    /// Set for a TLS broker (`mqtts://`) only.
    pub tls: Option<TlsFiles>,
}

impl Settings {
    pub fn from_config(config: &BTreeMap<String, String>) -> Result<Self, ProviderError> {
        let uri = config
            .get("uri")
            .map(|u| u.trim())
            .filter(|u| !u.is_empty())
            .unwrap_or(DEFAULT_URI);
        let qos = match config.get("qos").map(|q| q.trim()) {
            None | Some("1") => QoS::AtLeastOnce,
            Some("0") => QoS::AtMostOnce,
            Some(other) => {
                return Err(ProviderError::Other(format!(
                    "MQTT qos `{other}`: expected 0 or 1"
                )));
            }
        };
        let broker = BrokerAddr::parse(uri)?;
        let tls = tls_files(config, &broker)?;
        Ok(Self {
            broker,
            tls,
            client_id: config
                .get("client_id")
                .map(|c| c.trim().to_string())
                .filter(|c| !c.is_empty()),
            qos,
        })
    }
}

/// The TLS files of `config`: `None` for a plain broker, which must name none of them.
fn tls_files(
    config: &BTreeMap<String, String>,
    broker: &BrokerAddr,
) -> Result<Option<TlsFiles>, ProviderError> {
    let path = |key: &str| {
        config
            .get(key)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let (ca, cert, key) = (path("tls_ca"), path("tls_cert"), path("tls_key"));
    if !broker.tls {
        return match [("tls_ca", &ca), ("tls_cert", &cert), ("tls_key", &key)]
            .into_iter()
            .find(|(_, v)| v.is_some())
        {
            Some((name, _)) => Err(ProviderError::Other(format!(
                "`{name}` is set but the uri `{broker}` is not TLS: use mqtts://{}:{} (or drop `{name}`)",
                broker.host, broker.port
            ))),
            None => Ok(None),
        };
    }
    let client = match (cert, key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => {
            return Err(ProviderError::Other(
                "a client certificate needs both `tls_cert` and `tls_key` (PEM files); set both or neither".into(),
            ));
        }
    };
    Ok(Some(TlsFiles { ca, client }))
}

/// The comma-separated topic filters of `subscriptions`, checked.
pub fn filters(config: &BTreeMap<String, String>) -> Result<Vec<String>, ProviderError> {
    let list = config.get("subscriptions").map_or("", String::as_str);
    let mut filters: Vec<String> = Vec::new();
    for filter in list.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        if !rumqttc::valid_filter(filter) {
            return Err(ProviderError::Other(format!(
                "`{filter}` is not an MQTT topic filter (`+` and `#` stand for whole levels, `#` last)"
            )));
        }
        if !filters.iter().any(|f| f == filter) {
            filters.push(filter.to_string());
        }
    }
    if filters.is_empty() {
        return Err(ProviderError::Other(
            "the link's source config has no `subscriptions` (comma-separated MQTT topic filters)"
                .into(),
        ));
    }
    Ok(filters)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn uris() {
        let a = BrokerAddr::parse("mqtt://127.0.0.1:1883").expect("valid");
        assert_eq!((a.host.as_str(), a.port), ("127.0.0.1", 1883));
        let a = BrokerAddr::parse("tcp://broker.local").expect("valid");
        assert_eq!((a.host.as_str(), a.port), ("broker.local", 1883));
        let a = BrokerAddr::parse("mqtt://user:secret@[::1]:1884/").expect("valid");
        assert_eq!((a.host.as_str(), a.port), ("::1", 1884));
        assert_eq!(a.credentials, Some(("user".into(), "secret".into())));
        assert!(!a.to_string().contains("secret"));
        let a = BrokerAddr::parse("mqtts://broker.local").expect("valid");
        assert_eq!((a.port, a.tls), (8883, true));
        assert_eq!(a.to_string(), "mqtts://broker.local:8883");
        let a = BrokerAddr::parse("ssl://broker.local:9883").expect("valid");
        assert_eq!((a.port, a.tls), (9883, true));
        assert!(!BrokerAddr::parse("tcp://x").expect("valid").tls);
        assert!(BrokerAddr::parse("ws://x").is_err());
        assert!(BrokerAddr::parse("mqtt://x:notaport").is_err());
        assert!(BrokerAddr::parse("mqtt://x/path").is_err());
    }

    #[test]
    fn settings_and_filters() {
        let s = Settings::from_config(&config(&[])).expect("defaults");
        assert_eq!(s.broker.to_string(), DEFAULT_URI);
        assert_eq!(s.qos, QoS::AtLeastOnce);
        assert!(Settings::from_config(&config(&[("qos", "2")])).is_err());
        let s = Settings::from_config(&config(&[("qos", "0"), ("client_id", "gw1")])).expect("ok");
        assert_eq!(
            (s.qos, s.client_id.as_deref()),
            (QoS::AtMostOnce, Some("gw1"))
        );

        assert_eq!(s.tls, None);

        // TLS files belong to TLS brokers, and a client key comes with its certificate.
        assert!(Settings::from_config(&config(&[("tls_ca", "/ca.pem")])).is_err());
        let tls = Settings::from_config(&config(&[("uri", "mqtts://b"), ("tls_ca", "/ca.pem")]))
            .expect("ok")
            .tls
            .expect("TLS");
        assert_eq!((tls.ca, tls.client), (Some("/ca.pem".into()), None));
        let one = config(&[("uri", "mqtts://b"), ("tls_cert", "/c.pem")]);
        assert!(Settings::from_config(&one).is_err());
        let both = config(&[
            ("uri", "ssl://b"),
            ("tls_cert", "/c.pem"),
            ("tls_key", "/k.pem"),
        ]);
        let tls = Settings::from_config(&both).expect("ok").tls.expect("TLS");
        assert_eq!((tls.ca, tls.client.is_some()), (None, true));

        let f = filters(&config(&[(
            "subscriptions",
            " sensors/+/temp, #,sensors/+/temp,",
        )]));
        assert_eq!(f.expect("valid"), vec!["sensors/+/temp", "#"]);
        assert!(filters(&config(&[("subscriptions", "a/#/b")])).is_err());
        assert!(filters(&config(&[])).is_err());
    }
}

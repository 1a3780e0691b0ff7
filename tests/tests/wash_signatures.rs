//! Components signed the way wasmCloud's `wash` signs them (the `wascap` crate, an nkey account
//! key), end to end: trusted, they deploy and serve; one byte changed after signing, they are
//! refused by `lattice push`, by `lattice ctl deploy` (a `file://` image) and by the host; an
//! untrusted account or an expired token is refused by the host before compilation.

use lattice_protocol::keys::PublicKey;
use lattice_protocol::messages::{AppState, FailureReason};
use lattice_protocol::unix_now;
use lattice_tests::cli::{Cli, arg, assert_says};
use lattice_tests::{TestLattice, endpoint, hello_manifest, hello_wasm, http_get};
use wascap::jwt::{Claims, Component};
use wascap::prelude::KeyPair as NKey;

const ANY_PORT: &str = "127.0.0.1:0";

/// Signs `component` as `wash claims sign` (and `wash build`) do: claims for the component
/// key, issued by `account`, embedded by wascap.
fn wash_sign(component: &[u8], account: &NKey, expires: Option<u64>) -> Vec<u8> {
    let module = NKey::new_module();
    let claims = Claims::<Component>::with_dates(
        "hello".into(),
        account.public_key(),
        module.public_key(),
        Some(vec![]),
        None,
        expires,
        false,
        Some(1),
        Some("0.1.0".into()),
        None,
    );
    wascap::wasm::embed_claims(component, &claims, account).expect("wascap signs")
}

/// One byte of the greeting changed after signing, outside the JWT section.
fn tamper(mut bytes: Vec<u8>) -> Vec<u8> {
    let what = b"from Lattice";
    let at = bytes
        .windows(what.len())
        .position(|w| w == what)
        .expect("the greeting is in the component");
    bytes[at] ^= 0x20;
    bytes
}

/// A lattice whose one host trusts `account` (a wash account key) besides the lattice's issuer.
async fn lattice_trusting(
    account: &NKey,
) -> anyhow::Result<(TestLattice, lattice_tests::TestHost)> {
    let t = TestLattice::start().await?;
    let mut config = t.host_config("edge-1");
    config
        .trusted_issuers
        .push(PublicKey::parse(&account.public_key())?);
    let host = t.start_host(config).await?;
    t.wait_for("the host to report", || async {
        Ok(!t.ctl.hosts().await?.is_empty())
    })
    .await?;
    Ok((t, host))
}

/// Deploys `bytes` (stored without the CLI's checks) as app `app`, waits for it to fail and
/// returns the message, after checking the host refused its signature.
async fn refused_by_host(t: &TestLattice, app: &str, bytes: &[u8]) -> anyhow::Result<String> {
    let image = t.push(bytes).await?;
    let manifest = hello_manifest(app, "v1", &image.to_string(), "Hi", ANY_PORT);
    t.ctl.deploy(&manifest).await?;
    let status = t
        .wait_status(app, "the app to fail", |s| s.status == AppState::Failed)
        .await?;
    let reasons: Vec<_> = status.components.iter().map(|c| c.reason).collect();
    assert_eq!(
        reasons,
        [Some(FailureReason::RefusedSignature)],
        "{status:?}"
    );
    Ok(status.message)
}

#[tokio::test]
async fn a_wash_signed_component_deploys_and_answers() -> anyhow::Result<()> {
    let account = NKey::new_account();
    let (t, _host) = lattice_trusting(&account).await?;
    let cli = Cli::new(&t)?;
    let signed = wash_sign(&hello_wasm(), &account, None);
    let file = cli.file("hello_s.wasm", &signed)?;

    let inspected: serde_json::Value =
        serde_json::from_str(&cli.local(&["inspect", &arg(&file), "-o", "json"]).await?)?;
    assert_eq!(inspected["claims"]["format"], "wash", "{inspected}");
    assert_eq!(inspected["claims"]["issuer"], account.public_key());
    assert_eq!(inspected["claims"]["version"], "0.1.0");
    assert_says(
        inspected["signature"].as_str().unwrap_or_default(),
        &["valid"],
    );

    // `lattice push` checks it and tags it from its claims.
    cli.ok(&["push", &arg(&file)]).await?;
    t.ctl
        .deploy(&hello_manifest(
            "hello",
            "v1",
            "hello:0.1.0",
            "Howdy",
            ANY_PORT,
        ))
        .await?;
    let status = t.wait_deployed("hello").await?;
    let (code, body) = http_get(&endpoint(&status)?, "/").await?;
    assert_eq!(
        (code, body.as_str()),
        (200, "Howdy from Lattice (host edge-1)\n")
    );
    Ok(())
}

#[tokio::test]
async fn a_tampered_wash_component_is_refused_at_push_deploy_and_on_the_host() -> anyhow::Result<()>
{
    let account = NKey::new_account();
    let (t, host) = lattice_trusting(&account).await?;
    let cli = Cli::new(&t)?;
    let tampered = tamper(wash_sign(&hello_wasm(), &account, None));
    let file = cli.file("app/build/hello_s.wasm", &tampered)?;

    let stderr = cli.refused(&["push", &arg(&file)]).await?;
    assert_says(&stderr, &["tampered component", "sign it again"]);

    let manifest = hello_manifest("app", "v1", "file://build/hello_s.wasm", "Hi", ANY_PORT);
    let app = cli.file("app/wadm.yaml", manifest.as_bytes())?;
    let stderr = cli.refused(&["ctl", "deploy", &arg(&app)]).await?;
    assert_says(&stderr, &["hello_s.wasm", "signature does not verify"]);

    // Stored by another client: the host refuses it before compiling anything.
    let message = refused_by_host(&t, "raw", &tampered).await?;
    assert_says(&message, &["tampered component"]);
    let compiled = std::fs::read_dir(host.state_dir.join("compiled"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(compiled, 0, "nothing was compiled");
    Ok(())
}

#[tokio::test]
async fn an_untrusted_account_or_an_expired_token_is_refused_by_the_host() -> anyhow::Result<()> {
    let account = NKey::new_account();
    let (t, _host) = lattice_trusting(&account).await?;

    let stranger = NKey::new_account();
    let message =
        refused_by_host(&t, "stranger", &wash_sign(&hello_wasm(), &stranger, None)).await?;
    assert_says(&message, &["untrusted issuer", &stranger.public_key()]);

    // Expired an hour ago: well past the lattice's clock-skew margin.
    let expired = wash_sign(&hello_wasm(), &account, Some(unix_now() - 3600));
    let message = refused_by_host(&t, "expired", &expired).await?;
    assert_says(&message, &["expired component"]);
    Ok(())
}

#[tokio::test]
async fn lattice_up_takes_only_issuer_keys_to_trust() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let cli = Cli::new(&t)?;
    // An operator key where an issuer (or wash account) key belongs: refused before anything
    // starts, saying which flag and what it wants.
    let (success, _, stderr) = cli
        .run(
            &["up", "--trust-issuer", t.operator.public_key().as_str()],
            true,
        )
        .await?;
    assert!(!success, "lattice up started with an operator key to trust");
    assert_says(&stderr, &["--trust-issuer", "account public key (A...)"]);
    Ok(())
}

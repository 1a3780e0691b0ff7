//! Operators are identified: every `lattice ctl` request is signed by a user key, fresh, and
//! authorized by the lattice's role table; every reply is signed by the control plane. One
//! test per attack, each asserting the refusal (its code and which check) and that the lattice
//! keeps serving its admin right after. A real nats-server and control plane, in-process; the
//! role-table commands through the real `lattice` binary.

use std::path::Path;
use std::process::{Command, Stdio};

use lattice_protocol::auth::{Grant, Role, SignedReply, SignedRequest};
use lattice_protocol::envelope::{self, Reply};
use lattice_protocol::error::{ErrorCode, WireError};
use lattice_protocol::keys::{KeyPair, KeyRole};
use lattice_protocol::messages::UserEntry;
use lattice_protocol::names::AppName;
use lattice_protocol::subject::{CONTROL_QUEUE_GROUP, CtlVerb, Subject};
use lattice_tests::{TestLattice, WAIT, hello_manifest, hello_wasm, lattice_bin};

use futures::StreamExt;

const ANY_PORT: &str = "127.0.0.1:0";

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Sends `payload` as it is on `verb`'s subject and returns the control plane's refusal, after
/// checking that it is signed by the lattice's control plane for the request with `nonce`.
async fn raw(
    t: &TestLattice,
    verb: CtlVerb,
    payload: Vec<u8>,
    nonce: &[u8],
) -> anyhow::Result<WireError> {
    let subject = Subject::ctl(&t.lattice, verb).to_string();
    let msg = tokio::time::timeout(WAIT, t.client.request(subject, payload.into())).await??;
    let reply: SignedReply = envelope::decode(&msg.payload)?;
    reply.verify(nonce, &[t.operator.public_key()])?;
    // Any answer but an error is an acceptance (and does not decode as a `Reply<()>`).
    match envelope::decode::<Reply<()>>(&reply.body) {
        Ok(Err(error)) => Ok(error),
        _ => anyhow::bail!("accepted; expected a refusal"),
    }
}

/// `error`, which must be `not_allowed` and name `check`.
fn refused(error: WireError, check: &str) -> WireError {
    assert_eq!(error.code, ErrorCode::NotAllowed, "{error}");
    assert!(error.message.contains(check), "`{check}` in: {error}");
    error
}

/// The admin is still served: a signed request right after the attack succeeds.
async fn still_serving(t: &TestLattice) -> anyhow::Result<()> {
    t.ctl.apps().await?;
    Ok(())
}

#[tokio::test]
async fn an_unsigned_request_is_refused() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    // A bare envelope, as `lattice ctl` sent before requests were signed.
    let reply = raw(&t, CtlVerb::Apps, envelope::encode(&()), &[]).await?;
    let error = refused(reply, "unsigned request");
    assert!(error.message.contains("lattice keys gen user"), "{error}");
    still_serving(&t).await
}

#[tokio::test]
async fn a_replayed_request_is_refused() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    // Someone who may subscribe captures a genuine request's bytes ...
    let subject = Subject::ctl(&t.lattice, CtlVerb::Apps).to_string();
    let mut wiretap = t.client.subscribe(subject).await?;
    lattice_tests::synced(&t.client).await?;
    t.ctl.apps().await?;
    let captured = tokio::time::timeout(WAIT, wiretap.next())
        .await?
        .ok_or_else(|| anyhow::anyhow!("nothing captured"))?;
    let nonce = envelope::decode::<SignedRequest>(&captured.payload)?.nonce;
    // ... and sends them again.
    let reply = raw(&t, CtlVerb::Apps, captured.payload.to_vec(), &nonce).await?;
    refused(reply, "replayed request");
    still_serving(&t).await
}

#[tokio::test]
async fn a_request_moved_to_another_verb_is_refused() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let signed = SignedRequest::sign(
        &t.lattice,
        CtlVerb::Apps.as_str(),
        envelope::encode(&()),
        &t.admin,
        now_ms(),
    );
    // Signed to list apps, sent to stop a host.
    let reply = raw(
        &t,
        CtlVerb::StopHost,
        envelope::encode(&signed),
        &signed.nonce,
    )
    .await?;
    refused(
        reply,
        "was signed for `test apps` but arrived as `test stop_host`",
    );
    still_serving(&t).await
}

#[tokio::test]
async fn a_stale_request_is_refused() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let five_minutes_ago = now_ms() - 5 * 60 * 1000;
    let signed = SignedRequest::sign(
        &t.lattice,
        CtlVerb::Apps.as_str(),
        envelope::encode(&()),
        &t.admin,
        five_minutes_ago,
    );
    let reply = raw(&t, CtlVerb::Apps, envelope::encode(&signed), &signed.nonce).await?;
    let error = refused(reply, "stale request");
    assert!(error.message.contains("clock"), "{error}");
    still_serving(&t).await
}

#[tokio::test]
async fn an_unknown_user_key_is_refused() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let stranger = KeyPair::generate(KeyRole::User);
    let public = stranger.public_key();
    let error = t.ctl.signing_as(stranger).apps().await.unwrap_err();
    assert_eq!(error.code, ErrorCode::NotAllowed, "{error}");
    assert!(error.message.contains("unknown user key"), "{error}");
    assert!(
        error
            .message
            .contains(&format!("lattice ctl users add {public}")),
        "{error}"
    );
    still_serving(&t).await
}

/// A user added by the admin with `role` (and, for a deployer, `apps`), and its client.
async fn user(
    t: &TestLattice,
    name: &str,
    role: Role,
    apps: &[&str],
) -> anyhow::Result<lattice_control::client::CtlClient> {
    let key = KeyPair::generate(KeyRole::User);
    let grant = Grant::new(name, role, apps).map_err(anyhow::Error::msg)?;
    t.ctl.users_add(&key.public_key(), grant).await?;
    Ok(t.ctl.signing_as(key))
}

#[tokio::test]
async fn a_viewer_reads_but_cannot_deploy() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let image = t.push(&t.sign(&hello_wasm(), "hello", "0.1.0")).await?;
    let viewer = user(&t, "ops", Role::Viewer, &[]).await?;
    assert!(viewer.apps().await?.is_empty());

    let manifest = hello_manifest("hello", "v1", &image.to_string(), "Hi", ANY_PORT);
    let error = viewer.deploy(&manifest).await.unwrap_err();
    assert_eq!(error.code, ErrorCode::NotAllowed, "{error}");
    assert!(
        error
            .message
            .contains("ops is a viewer and may not change app `hello`"),
        "{error}"
    );
    assert!(t.ctl.apps().await?.is_empty(), "nothing was deployed");
    // The admin deploys the same manifest right after.
    assert!(t.ctl.deploy(&manifest).await?.changed);
    let error = viewer.undeploy(&AppName::new("hello")?).await.unwrap_err();
    assert_eq!(error.code, ErrorCode::NotAllowed, "{error}");
    assert_eq!(t.ctl.apps().await?.len(), 1, "still deployed");
    Ok(())
}

#[tokio::test]
async fn a_deployer_changes_only_the_apps_of_its_patterns() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let image = t.push(&t.sign(&hello_wasm(), "hello", "0.1.0")).await?;
    let deployer = user(&t, "ci", Role::Deployer, &["shop-*"]).await?;
    let manifest = |app: &str| hello_manifest(app, "v1", &image.to_string(), "Hi", ANY_PORT);

    let error = deployer.deploy(&manifest("blog")).await.unwrap_err();
    assert_eq!(error.code, ErrorCode::NotAllowed, "{error}");
    assert!(
        error.message.contains("may not change app `blog`")
            && error.message.contains("allowed apps: shop-*"),
        "{error}"
    );
    // Inside its patterns: deployed, and undeployed.
    let reply = deployer.deploy(&manifest("shop-web")).await?;
    assert_eq!(reply.name, AppName::new("shop-web")?);
    // Nor may it touch the lattice itself.
    let error = deployer.stop_host("anything").await.unwrap_err();
    assert_eq!(error.code, ErrorCode::NotAllowed, "{error}");
    assert!(error.message.contains("change the lattice"), "{error}");
    let names: Vec<String> = t
        .ctl
        .apps()
        .await?
        .into_iter()
        .map(|a| a.name.to_string())
        .collect();
    assert_eq!(names, ["shop-web"]);
    deployer.undeploy(&AppName::new("shop-web")?).await?;
    still_serving(&t).await
}

#[tokio::test]
async fn a_forged_reply_is_refused_by_the_client() -> anyhow::Result<()> {
    let mut t = TestLattice::start().await?;
    // A genuine reply, to replay later on another request.
    let signed = SignedRequest::sign(
        &t.lattice,
        CtlVerb::Apps.as_str(),
        envelope::encode(&()),
        &t.admin,
        now_ms(),
    );
    let subject = Subject::ctl(&t.lattice, CtlVerb::Apps).to_string();
    let genuine = tokio::time::timeout(
        WAIT,
        t.client
            .request(subject.clone(), envelope::encode(&signed).into()),
    )
    .await??
    .payload;

    // The real control plane goes; a rogue in its queue group answers instead, three ways.
    t.stop_control().await?;
    let rogue_client = t.nats.client().await?;
    let mut rogue = rogue_client
        .queue_subscribe(
            Subject::all_ctl(&t.lattice),
            CONTROL_QUEUE_GROUP.to_string(),
        )
        .await?;
    lattice_tests::synced(&rogue_client).await?;
    let forger = KeyPair::generate(KeyRole::Operator);
    let answers: Vec<Vec<u8>> = vec![
        // Signed, but by a key the client does not trust.
        envelope::encode(&SignedReply::sign(
            &[0; 16],
            envelope::encode(&Reply::<Vec<()>>::Ok(Vec::new())),
            &forger,
        )),
        // A genuine reply of the control plane, to another request.
        genuine.to_vec(),
        // Not signed at all.
        envelope::encode(&Reply::<Vec<()>>::Ok(Vec::new())),
    ];
    let answering = {
        let rogue_client = rogue_client.clone();
        tokio::spawn(async move {
            for answer in answers {
                let Some(msg) = rogue.next().await else {
                    return;
                };
                if let Some(reply) = msg.reply {
                    let _ = rogue_client.publish(reply, answer.into()).await;
                }
            }
        })
    };
    let forged = [
        "not a control-plane key this command trusts",
        "answers another request",
        "not signed by a control plane",
    ];
    for check in forged {
        // Until the rogue's subscription is the only one the server routes to (the stopped
        // control plane's connection may still be closing), a request can find no responder;
        // that answer is not the rogue's and uses none of its forgeries.
        let deadline = tokio::time::Instant::now() + WAIT;
        let error = loop {
            let error = tokio::time::timeout(WAIT, t.ctl.apps()).await?.unwrap_err();
            if error.code != ErrorCode::Unavailable || tokio::time::Instant::now() > deadline {
                break error;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        assert_eq!(error.code, ErrorCode::NotAllowed, "{error}");
        assert!(error.message.contains(check), "`{check}` in: {error}");
    }
    tokio::time::timeout(WAIT, answering).await??;
    drop(rogue_client);

    // The real control plane returns and is believed again.
    t.start_control(|_| {}).await?;
    still_serving(&t).await
}

/// `lattice ARGS` against the test lattice, signing with `key` and trusting its control plane.
fn lattice(t: &TestLattice, key: &Path, args: &[&str]) -> anyhow::Result<std::process::Output> {
    let dir = key.parent().unwrap_or(Path::new("."));
    Ok(Command::new(lattice_bin())
        .args(args)
        .arg("--nats-url")
        .arg(&t.nats.url)
        .arg("--lattice")
        .arg(t.lattice.as_str())
        .arg("--key")
        .arg(key)
        .arg("--control-key")
        .arg(t.operator.public_key().as_str())
        .env("LATTICE_STATE_DIR", dir)
        .env_remove("LATTICE_KEY")
        .env_remove("LATTICE_CONTROL_KEY")
        .stdin(Stdio::null())
        .output()?)
}

fn ok(out: std::process::Output) -> anyhow::Result<String> {
    anyhow::ensure!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

// Multi-threaded: the CLI runs as a blocking child process while the in-process control plane
// answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_added_listed_and_removed_with_the_cli() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let dir = tempfile::tempdir()?;
    let admin_file = dir.path().join("admin.nk");
    std::fs::write(&admin_file, t.admin.to_file_contents())?;

    // A new key, made by the CLI.
    let ci_file = dir.path().join("ci.nk");
    let out = Command::new(lattice_bin())
        .args(["keys", "gen", "user", "-o"])
        .arg(&ci_file)
        .output()?;
    let ci = ok(out)?.trim().to_string();
    assert!(ci.starts_with('U'), "a user key: {ci}");

    // Unknown until added.
    let out = lattice(&t, &ci_file, &["ctl", "get", "apps"])?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown user key"), "{stderr}");

    let add = [
        "ctl",
        "users",
        "add",
        &ci,
        "--name",
        "ci",
        "--role",
        "deployer",
        "--apps",
        "shop-*,blog",
    ];
    ok(lattice(&t, &admin_file, &add)?)?;
    let list: Vec<UserEntry> = serde_json::from_str(&ok(lattice(
        &t,
        &admin_file,
        &["ctl", "users", "list", "-o", "json"],
    )?)?)?;
    let entry = list
        .iter()
        .find(|u| u.key.as_str() == ci)
        .ok_or_else(|| anyhow::anyhow!("ci not listed: {list:?}"))?;
    assert_eq!(entry.grant.role, Role::Deployer);
    let apps: Vec<&str> = entry.grant.apps.iter().map(|p| p.as_str()).collect();
    assert_eq!(apps, ["shop-*", "blog"]);
    assert!(
        list.iter()
            .any(|u| u.key == t.admin.public_key() && u.grant.role == Role::Admin)
    );

    // The deployer reads, but may not manage users.
    ok(lattice(&t, &ci_file, &["ctl", "get", "apps"])?)?;
    let out = lattice(&t, &ci_file, &["ctl", "users", "list"])?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ci is a deployer and may not"), "{stderr}");

    // The last admin cannot be removed; the deployer can.
    let admin = t.admin.public_key().to_string();
    let out = lattice(&t, &admin_file, &["ctl", "users", "remove", &admin])?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is the last admin"), "{stderr}");
    ok(lattice(&t, &admin_file, &["ctl", "users", "remove", &ci])?)?;
    let out = lattice(&t, &ci_file, &["ctl", "get", "apps"])?;
    assert!(!out.status.success(), "removed: refused again");
    let listed = ok(lattice(&t, &admin_file, &["ctl", "users", "list"])?)?;
    assert!(!listed.contains(&ci), "{listed}");
    assert!(listed.contains(&admin), "{listed}");

    // What the control plane holds now: the admin alone.
    let users = tokio::time::timeout(WAIT, t.ctl.users_list()).await??;
    assert_eq!(users.len(), 1, "{users:?}");
    still_serving(&t).await
}

#[tokio::test]
async fn the_role_table_outlives_the_control_plane() -> anyhow::Result<()> {
    let mut t = TestLattice::start().await?;
    let viewer = user(&t, "ops", Role::Viewer, &[]).await?;
    // Another control plane, started with no bootstrap admin, reads the table as stored.
    t.stop_control().await?;
    t.start_control(|c| c.admins.clear()).await?;
    viewer.apps().await?;
    let users = t.ctl.users_list().await?;
    assert_eq!(users.len(), 2, "{users:?}");
    let error = viewer.stop_host("x").await.unwrap_err();
    assert_eq!(error.code, ErrorCode::NotAllowed, "{error}");
    still_serving(&t).await
}

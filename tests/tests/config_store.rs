//! The config store (`lattice config`, as `wash config`): a named config stored once is taken
//! by name by a manifest's `config` entry without `properties`, reaches the component, and a
//! change to it reaches the running app as a new version; a config an app takes cannot be
//! deleted, and a deploy naming a config the store lacks is refused with what to do.

use lattice_protocol::messages::AppState;
use lattice_tests::cli::{Cli, arg, assert_says};
use lattice_tests::{TestLattice, endpoint, hello_manifest, hello_wasm, http_get};

/// The hello app taking its greeting config from the store.
fn taking_greeting(image: &str) -> String {
    let written = hello_manifest("hello", "v1", image, "unused", "127.0.0.1:0");
    let taking = written.replace(
        "          - name: greeting\n            properties:\n              GREETING: \"unused\"\n",
        "          - name: greeting\n",
    );
    assert_ne!(taking, written, "the hello manifest's config block moved");
    taking
}

#[tokio::test]
async fn a_stored_config_is_taken_by_name_and_its_changes_reach_the_app() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let _host = t.add_host("edge-1").await?;
    let cli = Cli::new(&t)?;
    let image = t.push(&t.sign(&hello_wasm(), "hello", "0.1.0")).await?;
    let manifest = cli.file("hello.yaml", taking_greeting(&image.to_string()).as_bytes())?;

    // Not stored yet: refused before anything is deployed, saying how to store it.
    let refused = cli.refused(&["ctl", "deploy", &arg(&manifest)]).await?;
    assert_says(
        &refused,
        &[
            "config greeting",
            "not in the config store",
            "lattice ctl config put",
        ],
    );
    assert!(t.ctl.apps().await?.is_empty(), "nothing was deployed");

    cli.ok(&["config", "put", "greeting", "GREETING=Servus"])
        .await?;
    let stored: serde_json::Value =
        serde_json::from_str(&cli.ok(&["config", "get", "greeting", "-o", "json"]).await?)?;
    assert_eq!(stored, serde_json::json!({"GREETING": "Servus"}));

    cli.ok(&["ctl", "deploy", &arg(&manifest)]).await?;
    let status = t.wait_deployed("hello").await?;
    assert_eq!(status.version, "v1");
    assert_eq!(
        http_get(&endpoint(&status)?, "/").await?,
        (200, "Servus from Lattice (host edge-1)\n".into())
    );
    let list = cli.ok(&["ctl", "config", "list"]).await?;
    assert_says(&list, &["greeting", "GREETING", "hello"]);

    // A change reaches the running app, as a new version of it.
    let (stored, _, put) = cli
        .run(&["config", "put", "greeting", "GREETING=Grüezi"], false)
        .await?;
    assert!(stored, "{put}");
    assert_says(
        &put,
        &["config greeting stored", "hello takes it", "v1+greeting@"],
    );
    let status = t
        .wait_status("hello", "the config change to be deployed", |s| {
            s.version.starts_with("v1+greeting@") && s.status == AppState::Deployed
        })
        .await?;
    assert_eq!(
        http_get(&endpoint(&status)?, "/").await?,
        (200, "Grüezi from Lattice (host edge-1)\n".into())
    );

    // Taken by a deployed app: not deleted. Once nothing takes it, it goes.
    let refused = cli.refused(&["config", "del", "greeting"]).await?;
    assert_says(&refused, &["taken by the deployed app(s) hello"]);
    cli.ok(&["ctl", "undeploy", "hello"]).await?;
    cli.ok(&["config", "del", "greeting"]).await?;
    let gone = cli.refused(&["config", "get", "greeting"]).await?;
    assert_says(&gone, &["no config `greeting`"]);
    Ok(())
}

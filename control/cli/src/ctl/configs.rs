//! `lattice ctl config` (also `lattice config`): the lattice's named configs, which manifests
//! take by name, as `wash config` kept them for wasmCloud.

use lattice_control::client::CtlClient;

use crate::args::{ConfigWhat, Output};
use crate::output::{self, table};

/// Runs a `lattice ctl config` command.
pub(super) async fn configs(ctl: &CtlClient, what: ConfigWhat, out: Output) -> anyhow::Result<()> {
    match what {
        ConfigWhat::Put { name, values } => {
            let reply = ctl.config_put(&name, values.into_iter().collect()).await?;
            eprintln!("config {name} stored (revision {})", reply.revision);
            for (app, version) in &reply.redeployed {
                eprintln!(
                    "  {app} takes it: deploying version {version} (`lattice ctl status {app}`)"
                );
            }
        }
        ConfigWhat::Get { name } => {
            let values = ctl.config_get(&name).await?;
            output::print(out, &values, |values| {
                let rows: Vec<Vec<String>> = values
                    .iter()
                    .map(|(k, v)| vec![k.clone(), v.clone()])
                    .collect();
                table(&["KEY", "VALUE"], &rows)
            });
        }
        ConfigWhat::Del { name } => {
            ctl.config_del(&name).await?;
            eprintln!("config {name} deleted");
        }
        ConfigWhat::List => {
            let configs = ctl.config_list().await?;
            output::print(out, &configs, |configs| {
                let rows: Vec<Vec<String>> = configs
                    .iter()
                    .map(|c| {
                        let keys: Vec<&str> = c.values.keys().map(String::as_str).collect();
                        let apps: Vec<&str> = c.used_by.iter().map(|a| a.as_str()).collect();
                        vec![c.name.clone(), keys.join(","), apps.join(",")]
                    })
                    .collect();
                table(&["NAME", "KEYS", "TAKEN BY"], &rows)
            });
        }
    }
    Ok(())
}

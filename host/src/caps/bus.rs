//! `wasmcloud:bus/lattice` (@1.0.0 and @2.0.0): a component with several links on one
//! interface (a cache and a store, both `wasi:keyvalue`) chooses by the links' names which one
//! serves its next calls, as components built with the `wasmcloud-component` crate do.
//!
//! The choice lives in the store ([`LinkNames`]), so it lasts for one invocation: an HTTP
//! request's fresh instance starts with none, which means what it meant before: the link named
//! `default`, else the capability's own rule. The capabilities that read it are `wasi:keyvalue`
//! (`open`), `wasi:blobstore`, `wasmcloud:messaging/consumer` and component calls.
//!
//! @2.0.0 refuses a name that no link of an interface has, at once; @1.0.0 has no error to
//! give, so the choice is kept and the next call through it fails, naming the link.
//!
//! A unit on its own: [`BusView`] (the store's resource table, its choices and the workload's
//! links) and [`add_to_linker`].

use lattice_protocol::assignment::WorkloadLink;
use tracing::debug;
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

use super::bindings::{bus1, bus2};

/// The most interfaces one store may choose a link for: enough for every interface a host
/// serves, and a bound on what a guest can make the host keep.
const MAX_CHOSEN: usize = 64;

/// One interface a guest names (`call-target-interface`): `namespace:package/interface`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallTarget {
    namespace: String,
    package: String,
    interface: String,
}

impl std::fmt::Display for CallTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}/{}", self.namespace, self.package, self.interface)
    }
}

/// The link names one store's guest chose, per interface.
#[derive(Debug, Default)]
pub struct LinkNames(Vec<(CallTarget, String)>);

impl LinkNames {
    /// The link name chosen for `namespace:package/interface`, if the guest chose one.
    pub fn chosen(&self, namespace: &str, package: &str, interface: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(t, _)| {
                t.namespace == namespace && t.package == package && t.interface == interface
            })
            .map(|(_, name)| name.as_str())
    }

    /// Chooses `name` for each of `targets`, or says why not (too many interfaces).
    fn choose(&mut self, name: &str, targets: Vec<CallTarget>) -> Result<(), String> {
        for target in targets {
            let full = self.0.len() >= MAX_CHOSEN;
            match self.0.iter_mut().find(|(t, _)| *t == target) {
                Some((_, chosen)) => name.clone_into(chosen),
                None if full => {
                    return Err(format!(
                        "a link name was chosen for more than {MAX_CHOSEN} interfaces; choose for those the component uses"
                    ));
                }
                None => self.0.push((target, name.to_string())),
            }
        }
        Ok(())
    }
}

/// One store's view for `wasmcloud:bus`: its resources, its choices, and its workload's links.
#[derive(Debug)]
pub struct BusView<'a> {
    /// The store's resources (the guest's `call-target-interface`s).
    pub table: &'a mut ResourceTable,
    /// What the guest chose so far.
    pub names: &'a mut LinkNames,
    /// The workload's links, to check a name against.
    pub links: &'a [WorkloadLink],
}

impl BusView<'_> {
    fn target(
        &mut self,
        namespace: String,
        package: String,
        interface: String,
    ) -> wasmtime::Result<Resource<CallTarget>> {
        Ok(self.table.push(CallTarget {
            namespace,
            package,
            interface,
        })?)
    }

    /// Takes the guest's `targets` out of the table (they were passed owned) and chooses
    /// `name` for them; when `checked`, only if a link of that name serves each.
    fn set_link_name(
        &mut self,
        name: String,
        targets: Vec<Resource<CallTarget>>,
        checked: bool,
    ) -> wasmtime::Result<Result<(), String>> {
        let mut taken = Vec::with_capacity(targets.len());
        for target in targets {
            taken.push(self.table.delete(target)?);
        }
        if checked
            && let Some(missing) = taken.iter().find(|t| {
                !self
                    .links
                    .iter()
                    .any(|l| l.name == name && l.serves(&t.namespace, &t.package, &t.interface))
            })
        {
            return Ok(Err(format!(
                "no link named `{name}` serves {missing}: name a link of this component's manifest that does (its `name`, `default` when it has none)"
            )));
        }
        debug!(link = %name, interfaces = taken.len(), "link name chosen");
        Ok(self.names.choose(&name, taken))
    }
}

struct Bus;

impl HasData for Bus {
    type Data<'a> = BusView<'a>;
}

/// Adds `wasmcloud:bus/lattice` @1.0.0 and @2.0.0 to `linker`, served through `view`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> BusView<'_>,
) -> wasmtime::Result<()> {
    bus1::wasmcloud::bus::lattice::add_to_linker::<T, Bus>(linker, view)?;
    bus2::wasmcloud::bus::lattice::add_to_linker::<T, Bus>(linker, view)
}

// The two versions' resource is the same: one implementation, for each version's trait.
macro_rules! call_target_interface {
    ($($version:ident),*) => {$(
        impl $version::wasmcloud::bus::lattice::HostCallTargetInterface for BusView<'_> {
            fn new(
                &mut self,
                namespace: String,
                package: String,
                interface: String,
            ) -> wasmtime::Result<Resource<CallTarget>> {
                self.target(namespace, package, interface)
            }

            fn drop(&mut self, target: Resource<CallTarget>) -> wasmtime::Result<()> {
                self.table.delete(target)?;
                Ok(())
            }
        }
    )*};
}

call_target_interface!(bus1, bus2);

impl bus1::wasmcloud::bus::lattice::Host for BusView<'_> {
    // No error to give: a name no link has fails the next call through it, which names it.
    fn set_link_name(
        &mut self,
        name: String,
        targets: Vec<Resource<CallTarget>>,
    ) -> wasmtime::Result<()> {
        self.set_link_name(name, targets, false)?
            .map_err(wasmtime::Error::msg)
    }
}

impl bus2::wasmcloud::bus::lattice::Host for BusView<'_> {
    fn set_link_name(
        &mut self,
        name: String,
        targets: Vec<Resource<CallTarget>>,
    ) -> wasmtime::Result<Result<(), String>> {
        self.set_link_name(name, targets, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(i: &str) -> CallTarget {
        CallTarget {
            namespace: "wasi".into(),
            package: "keyvalue".into(),
            interface: i.into(),
        }
    }

    #[test]
    fn a_choice_is_per_interface_and_the_latest_wins() {
        let mut names = LinkNames::default();
        assert_eq!(names.chosen("wasi", "keyvalue", "store"), None);
        names
            .choose("cache", vec![target("store"), target("atomics")])
            .expect("chosen");
        names.choose("main", vec![target("store")]).expect("chosen");
        assert_eq!(names.chosen("wasi", "keyvalue", "store"), Some("main"));
        assert_eq!(names.chosen("wasi", "keyvalue", "atomics"), Some("cache"));
        assert_eq!(names.chosen("wasi", "keyvalue", "batch"), None);
    }

    #[test]
    fn a_guest_cannot_make_the_host_keep_unbounded_choices() {
        let mut names = LinkNames::default();
        let many = (0..MAX_CHOSEN).map(|i| target(&format!("i{i}"))).collect();
        names.choose("a", many).expect("within the bound");
        let err = names
            .choose("a", vec![target("one-more")])
            .expect_err("past the bound");
        assert!(err.contains("more than 64"), "{err}");
        // Choosing again for a known interface is still possible.
        names.choose("b", vec![target("i0")]).expect("known");
    }
}

//! The workloads one address serves: one for all its requests (the address its own), or several
//! routed by path or by host (wasmCloud's `path` and `host` routing modes), the most specific
//! matching route first.

use std::sync::Arc;

use lattice_protocol::assignment::HttpRoute;

use super::HttpWorkload;

/// What one listener serves.
#[derive(Debug, Default)]
pub(super) struct Routes {
    /// The workload of every request, when the address is one workload's.
    all: Option<Arc<HttpWorkload>>,
    /// Workloads by route, when the address is shared.
    routed: Vec<(HttpRoute, Arc<HttpWorkload>)>,
}

impl Routes {
    /// Serves `workload` on `route` (`None`: every request), replacing what served it.
    pub(super) fn set(&mut self, route: Option<HttpRoute>, workload: Arc<HttpWorkload>) {
        match route {
            None => self.all = Some(workload),
            Some(route) => match self.routed.iter_mut().find(|(r, _)| *r == route) {
                Some((_, served)) => *served = workload,
                None => self.routed.push((route, workload)),
            },
        }
    }

    /// Stops serving `route`; returns whether nothing is served any more.
    pub(super) fn remove(&mut self, route: Option<&HttpRoute>) -> bool {
        match route {
            None => self.all = None,
            Some(route) => self.routed.retain(|(r, _)| r != route),
        }
        self.all.is_none() && self.routed.is_empty()
    }

    /// The workload a request for `path` with `Host` header `host` goes to, if any. The
    /// header is read only when the address is shared: a request to an address of its own
    /// pays nothing for routing.
    pub(super) fn find<'a>(
        &self,
        path: &str,
        host: impl FnOnce() -> Option<&'a str>,
    ) -> Option<Arc<HttpWorkload>> {
        if let Some(all) = &self.all {
            return Some(all.clone());
        }
        let host = host();
        self.routed
            .iter()
            .filter(|(r, _)| r.matches(path, host))
            .max_by_key(|(r, _)| r.specificity())
            .map(|(_, w)| w.clone())
    }
}

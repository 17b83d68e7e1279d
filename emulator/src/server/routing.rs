//! Paths to parts: which part of the emulator a path belongs to ([`Surface`]), and the routes of
//! the data plane ([`route`]).

use crate::credentials::{container, imds};
use crate::fhir;

/// What the data-plane routing made of a path.
pub(super) enum Route<'a> {
    Resource {
        resource_type: &'a str,
        id: &'a str,
    },
    /// `/datastore/{ds}/r4/metadata`: the CapabilityStatement.
    Capabilities,
    UnknownDatastore(&'a str),
    NoMatch,
}

pub(super) fn route<'a>(path: &'a str, datastore_id: &str) -> Route<'a> {
    let Some(rest) = path.strip_prefix("/datastore/") else {
        return Route::NoMatch;
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let ds = segments.first().copied().unwrap_or_default();
    if ds.is_empty() {
        return Route::NoMatch;
    }
    if ds != datastore_id {
        return Route::UnknownDatastore(ds);
    }
    match segments.as_slice() {
        [_, "r4", "metadata"] => Route::Capabilities,
        [_, "r4", t, id] if fhir::is_valid_resource_type(t) && fhir::is_valid_id(id) => {
            Route::Resource {
                resource_type: t,
                id,
            }
        }
        _ => Route::NoMatch,
    }
}

fn is_inspection(path: &str) -> bool {
    path == "/_emulator" || path.starts_with("/_emulator/")
}

/// The credential endpoints on the main listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Endpoint {
    /// `/latest/...`
    Imds,
    /// `/v1/credentials`, `/v2/credentials...`
    Container,
}

/// Which part of the emulator a path belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Surface {
    /// `/_emulator/...`: unsigned, not recorded.
    Inspection,
    /// The IMDS and container endpoints: unsigned, recorded in the credentials call log.
    Credentials(Endpoint),
    /// Everything else: verified, recorded in the request log.
    DataPlane,
}

impl Surface {
    pub(super) fn of(path: &str) -> Self {
        if is_inspection(path) {
            Surface::Inspection
        } else if imds::is_imds_path(path) {
            Surface::Credentials(Endpoint::Imds)
        } else if container::is_container_path(path) {
            Surface::Credentials(Endpoint::Container)
        } else {
            Surface::DataPlane
        }
    }
}

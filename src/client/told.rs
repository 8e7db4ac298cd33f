//! What a client was told about its session's reported parameters (ParameterStatus:
//! client_encoding, DateStyle, TimeZone, standard_conforming_strings, is_superuser, …), so that
//! each server connection it is given reports to it whatever differs from what its driver believes.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::BytesMut;

use super::relay::Active;
use crate::backend::BackendConn;
use crate::protocol::build;

#[derive(Debug)]
pub struct Told {
    params: Arc<HashMap<String, String>>,
    /// `BackendConn::params_digest` of `params`: equal digests need no comparison.
    digest: u64,
}

impl Told {
    /// What the client heard at startup: the parameters of its first server connection.
    pub fn new(backend: &BackendConn) -> Told {
        Told { params: backend.params.clone(), digest: backend.params_digest }
    }

    /// What the client heard at startup from what its pool remembered (see `Pool::greeting`).
    pub fn remembered(greeting: &crate::pool::Greeting) -> Told {
        Told { params: greeting.params.clone(), digest: greeting.digest }
    }

    /// Tells the client (in `out`) every parameter `backend` reports differently, as the server
    /// would have had the client been connected to it all along.
    pub fn tell(&mut self, backend: &BackendConn, out: &mut BytesMut) {
        if backend.params_digest == self.digest {
            return;
        }
        let mut changed: Vec<_> = backend.params.iter().filter(|(k, v)| self.params.get(*k) != Some(*v)).collect();
        changed.sort();
        for (name, value) in changed {
            build::parameter_status(out, name, value);
        }
        self.params = backend.params.clone();
        self.digest = backend.params_digest;
    }

    /// At the end of a loan: every ParameterStatus the connection sent meanwhile reached the client.
    pub fn saw_loan(&mut self, a: &Active) {
        if a.backend.params_version != a.params_told {
            self.params = a.backend.params.clone();
            self.digest = a.backend.params_digest;
        }
    }
}

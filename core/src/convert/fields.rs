//! Field parsers that record a typed error instead of failing the whole object.
//!
//! Addresses and CIDRs are read by [`super::address`], legacy spellings included, as upstream
//! reads them. A legacy spelling is not an error and is not counted: upstream accepts it
//! silently, the API server (since KEP-4858) warns whoever writes such a value, which is where
//! it can be fixed, and a warning here would repeat on every node at every relist. It is
//! logged at `debug` level, once per field each time the object is converted (an object
//! event, never a sync), so an operator chasing an odd address can see how it was read.

use std::net::IpAddr;

use ipnet::IpNet;

use super::address::{self, Spelling};
use crate::error::{ModelError, ObjectRef};
use crate::model::{IpFamily, Protocol};

/// Collects the errors met while reading one object.
pub(crate) struct FieldReader {
    pub(crate) object: ObjectRef,
    pub(crate) errors: Vec<ModelError>,
}

impl FieldReader {
    pub(crate) fn new(object: ObjectRef) -> Self {
        Self {
            object,
            errors: Vec::new(),
        }
    }

    pub(crate) fn ip(&mut self, field: impl FnOnce() -> String, value: &str) -> Option<IpAddr> {
        match address::parse_ip_spelled(value.trim()) {
            Ok((ip, spelling)) => {
                self.note_spelling(spelling, field, value, &ip);
                Some(ip)
            }
            Err(_) => {
                self.errors.push(ModelError::InvalidIp {
                    object: self.object.clone(),
                    field: field(),
                    value: value.to_owned(),
                });
                None
            }
        }
    }

    /// An IP that must be of `family`.
    pub(crate) fn ip_of(
        &mut self,
        field: impl Fn() -> String,
        value: &str,
        family: IpFamily,
    ) -> Option<IpAddr> {
        let ip = self.ip(&field, value)?;
        if IpFamily::of(&ip) == family {
            Some(ip)
        } else {
            self.errors.push(ModelError::WrongFamily {
                object: self.object.clone(),
                field: field(),
                value: value.to_owned(),
            });
            None
        }
    }

    /// A CIDR, host bits cleared; a bare address is read as a host route, as the API server
    /// accepts.
    pub(crate) fn cidr(&mut self, field: impl FnOnce() -> String, value: &str) -> Option<IpNet> {
        let trimmed = value.trim();
        let parsed = address::parse_cidr_spelled(trimmed).ok().or_else(|| {
            address::parse_ip_spelled(trimmed)
                .ok()
                .map(|(ip, spelling)| (IpNet::from(ip), spelling))
        });
        match parsed {
            Some((net, spelling)) => {
                self.note_spelling(spelling, field, value, &net);
                Some(net)
            }
            None => {
                self.errors.push(ModelError::InvalidCidr {
                    object: self.object.clone(),
                    field: field(),
                    value: value.to_owned(),
                });
                None
            }
        }
    }

    /// Logs a legacy spelling (see the module doc for why only at `debug`).
    fn note_spelling(
        &self,
        spelling: Spelling,
        field: impl FnOnce() -> String,
        value: &str,
        read_as: &dyn std::fmt::Display,
    ) {
        if spelling == Spelling::Legacy {
            tracing::debug!(object = %self.object, field = field(), value, %read_as, "address written the legacy way; read as upstream reads it");
        }
    }

    pub(crate) fn port(&mut self, field: impl FnOnce() -> String, value: i32) -> Option<u16> {
        match u16::try_from(value) {
            Ok(port) if port != 0 => Some(port),
            _ => {
                self.errors.push(ModelError::PortOutOfRange {
                    object: self.object.clone(),
                    field: field(),
                    value: i64::from(value),
                });
                None
            }
        }
    }

    /// A protocol; unset means TCP.
    pub(crate) fn protocol(
        &mut self,
        field: impl FnOnce() -> String,
        value: Option<&str>,
    ) -> Option<Protocol> {
        let Some(value) = value else {
            return Some(Protocol::Tcp);
        };
        let protocol = Protocol::from_k8s(value);
        if protocol.is_none() {
            self.errors.push(ModelError::UnknownProtocol {
                object: self.object.clone(),
                field: field(),
                value: value.to_owned(),
            });
        }
        protocol
    }

    pub(crate) fn unsupported(&mut self, field: &str, value: &str) {
        self.errors.push(ModelError::UnsupportedValue {
            object: self.object.clone(),
            field: field.to_owned(),
            value: value.to_owned(),
        });
    }

    pub(crate) fn missing(&mut self, field: &str) {
        self.errors.push(ModelError::MissingField {
            object: self.object.clone(),
            field: field.to_owned(),
        });
    }
}

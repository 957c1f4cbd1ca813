//! Field parsers that record a typed error instead of failing the whole object.

use std::net::IpAddr;

use ipnet::IpNet;

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
        match value.trim().parse::<IpAddr>() {
            Ok(ip) => Some(ip),
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

    /// A CIDR; a bare address is read as a host route, as the API server accepts.
    pub(crate) fn cidr(&mut self, field: impl FnOnce() -> String, value: &str) -> Option<IpNet> {
        let trimmed = value.trim();
        let parsed = trimmed
            .parse::<IpNet>()
            .ok()
            .or_else(|| trimmed.parse::<IpAddr>().ok().map(IpNet::from));
        match parsed {
            Some(net) => Some(net.trunc()),
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

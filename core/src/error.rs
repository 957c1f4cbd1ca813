//! Typed errors for Kubernetes objects that do not convert cleanly into the model.
//!
//! A conversion error never stops other objects from being used, and usually not even the rest
//! of the same object: each error says which object and which field were bad, and the
//! conversion leaves out only what depended on that field.

use std::fmt;

/// The kind of a Kubernetes object this proxy reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKind {
    /// `v1/Service`.
    Service,
    /// `discovery.k8s.io/v1/EndpointSlice`.
    EndpointSlice,
    /// `v1/Node`.
    Node,
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ObjectKind::Service => "Service",
            ObjectKind::EndpointSlice => "EndpointSlice",
            ObjectKind::Node => "Node",
        })
    }
}

/// Which object an error is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    /// The object's kind.
    pub kind: ObjectKind,
    /// The object's namespace (empty for cluster-scoped objects).
    pub namespace: String,
    /// The object's name.
    pub name: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// A field of a Kubernetes object that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// A field the proxy cannot do without is missing.
    #[error("{object}: {field} is missing")]
    MissingField {
        /// The object.
        object: ObjectRef,
        /// The field, as a JSON path (`metadata.name`).
        field: String,
    },
    /// A field that must hold an IP address does not.
    #[error("{object}: {field} is not an IP address: {value:?}")]
    InvalidIp {
        /// The object.
        object: ObjectRef,
        /// The field, as a JSON path (`spec.externalIPs[2]`).
        field: String,
        /// The value found.
        value: String,
    },
    /// An IP address of a family the field does not allow (e.g. IPv6 in an IPv4 slice).
    #[error("{object}: {field} has an address of the wrong family: {value}")]
    WrongFamily {
        /// The object.
        object: ObjectRef,
        /// The field.
        field: String,
        /// The value found.
        value: String,
    },
    /// A field that must hold a CIDR does not.
    #[error("{object}: {field} is not a CIDR: {value:?}")]
    InvalidCidr {
        /// The object.
        object: ObjectRef,
        /// The field.
        field: String,
        /// The value found.
        value: String,
    },
    /// A port number outside 1..=65535.
    #[error("{object}: {field} is out of range 1-65535: {value}")]
    PortOutOfRange {
        /// The object.
        object: ObjectRef,
        /// The field.
        field: String,
        /// The value found.
        value: i64,
    },
    /// A protocol other than TCP, UDP and SCTP.
    #[error("{object}: {field} is not TCP, UDP or SCTP: {value:?}")]
    UnknownProtocol {
        /// The object.
        object: ObjectRef,
        /// The field.
        field: String,
        /// The value found.
        value: String,
    },
    /// A value outside the set the field allows.
    #[error("{object}: {field} has an unsupported value: {value:?}")]
    UnsupportedValue {
        /// The object.
        object: ObjectRef,
        /// The field.
        field: String,
        /// The value found.
        value: String,
    },
}

impl ModelError {
    /// The object the error is about.
    pub fn object(&self) -> &ObjectRef {
        match self {
            ModelError::MissingField { object, .. }
            | ModelError::InvalidIp { object, .. }
            | ModelError::WrongFamily { object, .. }
            | ModelError::InvalidCidr { object, .. }
            | ModelError::PortOutOfRange { object, .. }
            | ModelError::UnknownProtocol { object, .. }
            | ModelError::UnsupportedValue { object, .. } => object,
        }
    }

    /// The bad field, as a JSON path.
    pub fn field(&self) -> &str {
        match self {
            ModelError::MissingField { field, .. }
            | ModelError::InvalidIp { field, .. }
            | ModelError::WrongFamily { field, .. }
            | ModelError::InvalidCidr { field, .. }
            | ModelError::PortOutOfRange { field, .. }
            | ModelError::UnknownProtocol { field, .. }
            | ModelError::UnsupportedValue { field, .. } => field,
        }
    }
}

/// `head` followed by each error of the chain starting at `cause`, `: `-separated, each said
/// once: many errors print their cause themselves. What a log line or a status shows an
/// operator.
pub fn with_causes(head: String, cause: Option<&(dyn std::error::Error + 'static)>) -> String {
    let mut written = head;
    let mut cause = cause;
    while let Some(error) = cause {
        let text = error.to_string();
        if !written.contains(&text) {
            written.push_str(": ");
            written.push_str(&text);
        }
        cause = error.source();
    }
    written
}

//! Firewall marks of the short-circuit virtual servers, one per service port and family that
//! needs them, stable for as long as the port keeps needing one.

use std::collections::HashMap;

use crate::error::IpvsError;
use crate::programmed::PortKey;
use crate::render::MARK_MASK;

/// The largest mark index: the marks live in the upper 16 bits of the packet mark.
const MAX_INDEX: u32 = MARK_MASK >> 16;

/// Hands out marks `index << 16`.
#[derive(Debug, Default)]
pub(crate) struct Marks {
    by_port: HashMap<PortKey, u32>,
    free: Vec<u32>,
    next_index: u32,
}

impl Marks {
    /// The mark of `port`, assigning one when it has none.
    pub(crate) fn assign(&mut self, port: &PortKey) -> Result<u32, IpvsError> {
        if let Some(mark) = self.by_port.get(port) {
            return Ok(*mark);
        }
        let mark = match self.free.pop() {
            Some(mark) => mark,
            None if self.next_index < MAX_INDEX => {
                self.next_index += 1;
                self.next_index << 16
            }
            None => {
                return Err(IpvsError::Config(format!(
                    "more than {MAX_INDEX} service ports with externalTrafficPolicy: Local need a \
                     short-circuit firewall mark; {}/{} has none",
                    port.0, port.1
                )));
            }
        };
        self.by_port.insert(port.clone(), mark);
        Ok(mark)
    }

    /// Gives the mark of `port` back.
    pub(crate) fn release(&mut self, port: &PortKey) {
        if let Some(mark) = self.by_port.remove(port) {
            self.free.push(mark);
        }
    }
}

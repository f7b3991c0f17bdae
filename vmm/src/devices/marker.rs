//! The boot marker: the guest writes a byte to an MMIO address (from user space through
//! `/dev/mem`) and the VMM records the time since its own process started.

use crate::bus::BusDevice;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Value the guest's init writes when it starts running user space.
pub const MARK_INIT: u8 = 1;
/// Value the agent writes when it is ready to serve its host.
pub const MARK_AGENT_READY: u8 = 2;

/// Marks seen so far: (value, time since VMM start).
pub type Marks = Arc<Mutex<Vec<(u8, Duration)>>>;

/// The marker device.
pub struct Marker {
    started: Instant,
    marks: Marks,
}

impl Marker {
    /// A marker measuring from `started`, recording into `marks`.
    pub fn new(started: Instant, marks: Marks) -> Self {
        Self { started, marks }
    }
}

impl BusDevice for Marker {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        let value = data.first().copied().unwrap_or(0);
        let at = self.started.elapsed();
        tracing::info!(
            "guest marker {value:#04x} at {:.3} s after VMM start",
            at.as_secs_f64()
        );
        self.marks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((value, at));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_recorded_with_their_value() {
        let marks = Marks::default();
        let mut m = Marker::new(Instant::now(), marks.clone());
        m.write(0, &[MARK_INIT]);
        m.write(0, &[]);
        let got = marks.lock().unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, MARK_INIT);
        assert_eq!(got[1].0, 0);
    }
}

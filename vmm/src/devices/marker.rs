//! The boot marker: the guest writes a byte to an MMIO address (from user space through
//! `/dev/mem`) and the VMM records the time since its own process started.
//!
//! The guest decides how often it writes, so what is kept is bounded: the first write of each
//! value (that is the time that matters), at most [`MAX_MARKS`] of them; repeated writes are
//! only counted, and logged at 1, 2, 4, 8, … repeats.

use crate::bus::BusDevice;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Value the guest's init writes when it starts running user space.
pub const MARK_INIT: u8 = 1;
/// Value the agent writes when it is ready to serve its host.
pub const MARK_AGENT_READY: u8 = 2;
/// Most marks kept (distinct values, first write of each).
pub const MAX_MARKS: usize = 64;

/// Marks seen so far: (value, time since VMM start of its first write).
pub type Marks = Arc<Mutex<Vec<(u8, Duration)>>>;

/// The marker device.
pub struct Marker {
    started: Instant,
    marks: Marks,
    /// Writes not kept (a value seen before, or past [`MAX_MARKS`]).
    ignored: u64,
}

impl Marker {
    /// A marker measuring from `started`, recording into `marks`.
    pub fn new(started: Instant, marks: Marks) -> Self {
        Self {
            started,
            marks,
            ignored: 0,
        }
    }

    /// Writes not kept so far.
    pub fn ignored(&self) -> u64 {
        self.ignored
    }
}

impl BusDevice for Marker {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        let value = data.first().copied().unwrap_or(0);
        let at = self.started.elapsed();
        let mut marks = self.marks.lock().unwrap_or_else(|e| e.into_inner());
        if marks.len() < MAX_MARKS && !marks.iter().any(|(v, _)| *v == value) {
            marks.push((value, at));
            drop(marks);
            tracing::info!(
                "guest marker {value:#04x} at {:.3} s after VMM start",
                at.as_secs_f64()
            );
            return;
        }
        drop(marks);
        self.ignored += 1;
        if self.ignored.is_power_of_two() {
            tracing::warn!(
                "guest marker {value:#04x} written again ({} repeated or excess marker writes ignored)",
                self.ignored
            );
        }
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

    #[test]
    fn a_guest_writing_in_a_loop_keeps_memory_bounded() {
        let marks = Marks::default();
        let mut m = Marker::new(Instant::now(), marks.clone());
        m.write(0, &[MARK_INIT]);
        let first = marks.lock().unwrap()[0].1;
        for i in 0..100_000u32 {
            m.write(0, &[(i % 256) as u8]);
        }
        let got = marks.lock().unwrap();
        assert_eq!(got.len(), MAX_MARKS);
        assert_eq!(
            got[0],
            (MARK_INIT, first),
            "the first write of a value is kept"
        );
        assert_eq!(m.ignored(), 100_000 - (MAX_MARKS as u64 - 1));
    }
}

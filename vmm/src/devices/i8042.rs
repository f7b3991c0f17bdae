//! Just enough of the i8042 keyboard controller for `reboot=k`: a write of 0xfe to the command
//! port pulses the reset line, which ends the VM (as in Firecracker).

use super::{StopReason, StopSender};
use crate::bus::BusDevice;

/// Base I/O port (data port 0x60; command/status 0x64 is offset 4).
pub const PORT_BASE: u64 = 0x60;
/// Ports covered.
pub const PORT_LEN: u64 = 5;
const CMD_OFFSET: u64 = 4;
const CMD_RESET_CPU: u8 = 0xfe;

/// The controller.
pub struct I8042 {
    stop: StopSender,
}

impl I8042 {
    /// A controller reporting resets to `stop`.
    pub fn new(stop: StopSender) -> Self {
        Self { stop }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        // Status 0: output buffer empty, input buffer empty, so `kb_wait()` passes at once.
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == CMD_OFFSET && data.first() == Some(&CMD_RESET_CPU) {
            let _ = self.stop.send(StopReason::Reset);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_command_stops_the_vm() {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut dev = I8042::new(tx);
        dev.write(0, &[0xfe]);
        assert!(rx.try_recv().is_err());
        dev.write(CMD_OFFSET, &[0xfe]);
        assert_eq!(rx.try_recv().unwrap(), StopReason::Reset);
    }
}

#!/bin/bash
# Boots kennel-agent as /init of a minimal initramfs under qemu microvm (for comparison /
# debugging only; kennel-vmm replaces qemu) and waits until the agent says it listens on
# vsock. Usage: qemu-smoke.sh <vmlinux> <static kennel-agent> [timeout seconds]
set -euo pipefail
kernel=$1
agent=$2
timeout_s=${3:-600}
work=$(mktemp -d /tmp/kennel-agent-smoke.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/root/dev"
cp "$agent" "$work/root/init"
mknod -m 600 "$work/root/dev/console" c 5 1
(cd "$work/root" && find . | cpio -o -H newc --quiet > "$work/initrd.cpio")
args="console=ttyS0 reboot=k panic=-1 tsc=reliable no_timer_check i8042.noaux i8042.nomux i8042.dumbkbd"
if [ -e /sys/module/kvm_pvm ]; then
  args="$args lpj=2000000 noxsave clearcpuid=cx16,popcnt,movbe,rdrand,rdseed,fsgsbase,rdpid,smap,smep,pku,bmi1,bmi2,abm,invpcid,pcid,avx,avx2,avx512f,sha_ni,aes,pclmulqdq,clflushopt,clwb,x2apic syscall_trap rodata=off"
fi
start=$(date +%s.%N)
timeout "$timeout_s" qemu-system-x86_64 -M microvm,x-option-roms=off,rtc=off -accel kvm -cpu host \
  -m 256 -nodefaults -no-reboot -nographic -serial stdio -kernel "$kernel" \
  -initrd "$work/initrd.cpio" -append "$args" > "$work/console.log" 2>&1 &
qemu=$!
status=1
while kill -0 $qemu 2>/dev/null; do
  if grep -q "listening on vsock:1024" "$work/console.log"; then status=0; break; fi
  sleep 1
done
end=$(date +%s.%N)
kill $qemu 2>/dev/null || true
wait $qemu 2>/dev/null || true
grep -E "kennel-agent|Run /init|INFO|WARN|ERROR|panic" "$work/console.log" | tail -20
echo "boot to agent listening: $(echo "$end - $start" | bc) s (status $status)"
exit $status

#!/bin/bash
# Boots kennel-agent as /init of a minimal initramfs under qemu microvm (for comparison /
# debugging only; kennel-vmm replaces qemu) and waits until the agent says it listens on
# vsock. With a static build of the vm_selftest example as 4th argument it also packs that
# as /selftest, attaches a busybox ext4 image disk (serial img1), lets the agent start the
# self test, and waits for "SELFTEST OK".
# Usage: qemu-smoke.sh <vmlinux> <static kennel-agent> [timeout seconds] [static vm_selftest]
set -euo pipefail
kernel=$1
agent=$2
timeout_s=${3:-600}
selftest=${4:-}
work=$(mktemp -d /tmp/kennel-agent-smoke.XXXXXX)
trap 'cp "$work/console.log" /tmp/kennel-agent-smoke-console.log 2>/dev/null; rm -rf "$work"' EXIT
mkdir -p "$work/root/dev"
cp "$agent" "$work/root/init"
mknod -m 600 "$work/root/dev/console" c 5 1
extra=()
want="listening on vsock:1024"
if [ -n "$selftest" ]; then
  cp "$selftest" "$work/root/selftest"
  mkdir -p "$work/img/bin" "$work/img/etc" "$work/img/proc" "$work/img/dev" "$work/img/tmp"
  cp /bin/busybox "$work/img/bin/busybox"
  for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$work/img/bin/$a"; done
  echo from-the-image-disk > "$work/img/etc/image-file"
  truncate -s 32M "$work/img.ext4"
  mkfs.ext4 -q -F -d "$work/img" "$work/img.ext4"
  extra=(-drive "id=img1,file=$work/img.ext4,format=raw,if=none" -device "virtio-blk-device,drive=img1,serial=img1")
  want="SELFTEST OK"
fi
(cd "$work/root" && find . | cpio -o -H newc --quiet > "$work/initrd.cpio")
args="console=ttyS0 reboot=k panic=-1 tsc=reliable no_timer_check i8042.noaux i8042.nomux i8042.dumbkbd"
if [ -e /sys/module/kvm_pvm ]; then
  args="$args lpj=2000000 noxsave clearcpuid=cx16,popcnt,movbe,rdrand,rdseed,fsgsbase,rdpid,smap,smep,pku,bmi1,bmi2,abm,invpcid,pcid,avx,avx2,avx512f,sha_ni,aes,pclmulqdq,clflushopt,clwb,x2apic syscall_trap rodata=off"
fi
start=$(date +%s.%N)
timeout "$timeout_s" qemu-system-x86_64 -M microvm,x-option-roms=off,rtc=off,acpi=off -accel kvm -cpu host \
  -m 256 -nodefaults -no-reboot -nographic -serial stdio -kernel "$kernel" \
  -initrd "$work/initrd.cpio" "${extra[@]}" -append "$args${selftest:+ kennel_debug_exec=/selftest}" \
  > "$work/console.log" 2>&1 &
qemu=$!
status=1
while kill -0 $qemu 2>/dev/null; do
  if grep -q "SELFTEST FAILED" "$work/console.log"; then break; fi
  if grep -q "$want" "$work/console.log"; then
    status=0
    # Let the self test finish (destroy → reboot) before stopping qemu.
    [ -n "$selftest" ] && sleep 5
    break
  fi
  sleep 1
done
end=$(date +%s.%N)
kill $qemu 2>/dev/null || true
wait $qemu 2>/dev/null || true
grep -aE "kennel-agent|Run /init|INFO|WARN|ERROR|panic|selftest|SELFTEST|reboot" "$work/console.log" | tail -30
echo "boot to agent listening: $(echo "$end - $start" | bc) s (status $status)"
exit $status

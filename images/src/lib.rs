//! OCI images, guest kernel and initramfs for kennel

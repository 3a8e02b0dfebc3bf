//! ward-rootfs: the guest initrd, read-only layer images and the demo OCI image.

//! virtio-rng.

//! ward-shim: the containerd task service, the Sandbox kinds (vm, shared), and the `ward` CLI.

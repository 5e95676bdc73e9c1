"""Integration-test harness: real registries, a token server, test images and skopeo."""

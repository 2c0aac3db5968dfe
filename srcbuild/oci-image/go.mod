// oci-image: writes deterministic OCI image layouts for tests/make-images.
module hakube.dev/srcbuild/oci-image

go 1.26.0

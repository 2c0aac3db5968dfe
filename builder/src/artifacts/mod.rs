//! Kubernetes artifacts: the catalogue of what each release needs, the lock
//! file, the content-addressed download cache and mirrors.
//! (Owned by the artifacts work; this is the agreed interface.)

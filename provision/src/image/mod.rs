//! Container images for the jobs, built and pushed without a container daemon, in the manner
//! of ko and jib: the runtime binary and what it needs to run become tar+gzip layers, a config
//! and a manifest in an OCI image layout on disk (`build`); `push` copies that layout to the
//! stack's ECR repository with the registry protocol; `resolve` turns the tags jobs name into
//! the digests their job definitions pin. docs/images.md has the format and the reasoning.

pub mod build;
pub mod layer;
pub mod layout;
pub mod registry;
pub mod resolve;

pub use crate::stack::flavour;

/// The path of the runtime binary inside the image; job commands call it as `runtime`.
pub const BINARY_PATH: &str = "usr/local/bin/runtime";
/// The user the jobs run as: not root, with a home of its own.
pub const USER_ID: u64 = 1000;
pub const USER_NAME: &str = "runtime";
pub const HOME: &str = "/home/runtime";
/// The CA bundle's path in the image (Debian's), which rustls-native-certs and OpenSSL read.
pub const CA_BUNDLE: &str = "etc/ssl/certs/ca-certificates.crt";

/// OCI media types.
pub const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";
pub const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
pub const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

//! OCI images, guest kernel and initramfs for kennel.
//!
//! Images: [`registry`] pulls and pushes (HTTP/HTTPS, basic and bearer auth), [`store`] keeps verified
//! blobs and image records with CRI reference semantics, [`unpack`] flattens layers safely, [`block`]
//! turns an image into a shared read-only ext4 block image, [`archive`] imports `docker save` and OCI
//! archives, [`build`] writes images (OCI archives, registry pushes) and [`testimages`] builds the
//! project's own test images (busybox, kubia, kubia-pet).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod archive;
pub mod auth;
pub mod block;
pub mod build;
pub mod digest;
pub mod initramfs;
pub mod progress;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod spec;
pub mod store;
pub mod testimages;
pub mod testing;
pub mod testing_token;
pub mod unpack;

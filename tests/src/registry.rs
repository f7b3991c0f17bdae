//! The loopback test registry's content: Debian's static busybox and the project's kubia, built
//! here, pushed as `<registry>/busybox:latest` and `<registry>/kubia:latest`.

use images::testing::TestRegistry;
use std::path::PathBuf;

/// Pushes busybox and kubia (built with cargo, static) to `registry`.
pub async fn push_test_images(registry: &TestRegistry) {
    let cargo = std::env::var_os("CARGO")
        .map(PathBuf::from)
        .unwrap_or_else(|| "cargo".into());
    let ws = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let (kubia, pet) = tokio::task::spawn_blocking(move || {
        images::testimages::build_kubia_binaries(&cargo, &ws).expect("build kubia")
    })
    .await
    .unwrap();
    let client =
        images::registry::RegistryClient::new(registry.client_config(None)).expect("client");
    let built =
        images::testimages::test_images(images::testimages::HOST_BUSYBOX.as_ref(), &kubia, &pet)
            .expect("test images");
    for (name, img) in built {
        if name.starts_with("kubia-pet") {
            continue;
        }
        img.push(&client, &format!("{}/{name}", registry.host()))
            .await
            .expect("push");
    }
}

/// Pushes Debian's static busybox as `<registry>/busybox:latest`, logging in with `credentials`.
pub async fn push_busybox(registry: &TestRegistry, credentials: Option<images::auth::Credentials>) {
    let client =
        images::registry::RegistryClient::new(registry.client_config(credentials)).expect("client");
    let layer = images::testimages::busybox_layer(images::testimages::HOST_BUSYBOX.as_ref())
        .expect("busybox layer");
    let img = images::testimages::busybox_image(&layer);
    img.push(&client, &format!("{}/busybox:latest", registry.host()))
        .await
        .expect("push busybox");
}

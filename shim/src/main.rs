use nixlet_shim::shim::{NixletShim, RUNTIME_ID};

#[tokio::main]
async fn main() {
    containerd_shim::asynchronous::run::<NixletShim>(RUNTIME_ID, None).await;
}

//! The CRI image service, as the kubelet uses it before it creates a container: PullImage (and
//! RemoveImage, to make the next pull cold). The e2e harness's client covers the runtime
//! service only.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Result};
use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::{ImageSpec, PullImageRequest, RemoveImageRequest};
use tokio::net::UnixStream;
use tokio::runtime::Runtime;
use tonic::transport::{Channel, Endpoint, Uri};

/// A pull of a few hundred MB from loopback takes seconds; more means something hangs.
const CALL_TIMEOUT: Duration = Duration::from_secs(300);

pub struct ImageService {
    runtime: Runtime,
    client: ImageServiceClient<Channel>,
}

impl ImageService {
    pub fn connect(socket: &Path) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let socket = socket.to_path_buf();
        let channel = runtime.block_on(async move {
            // tonic needs a URI; the connector ignores it and dials the socket.
            Endpoint::try_from("http://[::]:0")?
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let socket = socket.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?))
                    }
                }))
                .await
        })?;
        Ok(Self {
            runtime,
            client: ImageServiceClient::new(channel),
        })
    }

    /// PullImage; returns the image id.
    pub fn pull(&self, image: &str) -> Result<String> {
        let mut client = self.client.clone();
        let request = PullImageRequest {
            image: Some(spec(image)),
            ..Default::default()
        };
        let response = self.runtime.block_on(async move {
            tokio::time::timeout(CALL_TIMEOUT, client.pull_image(request)).await
        });
        match response {
            Err(_) => Err(anyhow!("PullImage {image} timed out")),
            Ok(Err(status)) => Err(anyhow!("PullImage {image}: {}", status.message())),
            Ok(Ok(r)) => Ok(r.into_inner().image_ref),
        }
    }

    /// RemoveImage; an image that is not there is not an error (CRI says so too).
    pub fn remove(&self, image: &str) -> Result<()> {
        let mut client = self.client.clone();
        let request = RemoveImageRequest {
            image: Some(spec(image)),
        };
        self.runtime
            .block_on(async move {
                tokio::time::timeout(CALL_TIMEOUT, client.remove_image(request)).await
            })
            .map_err(|_| anyhow!("RemoveImage {image} timed out"))?
            .map_err(|status| anyhow!("RemoveImage {image}: {}", status.message()))?;
        Ok(())
    }
}

fn spec(image: &str) -> ImageSpec {
    ImageSpec {
        image: image.to_owned(),
        ..Default::default()
    }
}

//! The API calls of a restore drill (`freezeframe verify`): Droplets and volumes created from a
//! run's snapshots, found again by tag and destroyed; sizes with their prices; tags on images.
//! A POST that creates is sent once (a retry could create twice; whatever a lost answer created
//! carries the drill's tags, by which the drill's cleanup finds it); GETs and DELETEs are
//! retried.

use crate::client::{escape, ApiError, Client};
use crate::types::*;
use reqwest::Method;

impl Client {
    /// A snapshot (of a Droplet or a volume) by id.
    pub async fn snapshot(&self, id: &str) -> Result<Snapshot, ApiError> {
        let env: SnapshotEnvelope = self.get(&format!("/v2/snapshots/{}", escape(id))).await?;
        Ok(env.snapshot)
    }

    /// Every snapshot of the account of one kind (`droplet` or `volume`).
    pub async fn snapshots(&self, resource_type: &str) -> Result<Vec<Snapshot>, ApiError> {
        self.all::<ImageList>(&format!("/v2/snapshots?resource_type={}", escape(resource_type)))
            .await
    }

    /// The account's own images (snapshots) that carry `tag`.
    pub(crate) async fn images_tagged(&self, tag: &str) -> Result<Vec<Image>, ApiError> {
        self.all::<ImagePage>(&format!("/v2/images?private=true&tag_name={}", escape(tag)))
            .await
    }

    /// The Droplet sizes on sale.
    pub async fn sizes(&self) -> Result<Vec<Size>, ApiError> {
        self.all::<SizeList>("/v2/sizes").await
    }

    /// Creates a Droplet: one attempt.
    pub async fn create_droplet(&self, request: &DropletCreate<'_>) -> Result<Droplet, ApiError> {
        let env: DropletEnvelope = self
            .call(Method::POST, "/v2/droplets", Some(request), self.timeout())
            .await?;
        Ok(env.droplet)
    }

    /// Destroys a Droplet; one already gone is no error.
    pub async fn delete_droplet(&self, id: u64) -> Result<(), ApiError> {
        self.delete(&format!("/v2/droplets/{id}")).await
    }

    /// Destroys every Droplet that carries `tag`.
    pub async fn delete_droplets_tagged(&self, tag: &str) -> Result<(), ApiError> {
        self.delete(&format!("/v2/droplets?tag_name={}", escape(tag)))
            .await
    }

    /// Creates a volume: one attempt.
    pub async fn create_volume(&self, request: &VolumeCreate<'_>) -> Result<Volume, ApiError> {
        let env: VolumeEnvelope = self
            .call(Method::POST, "/v2/volumes", Some(request), self.timeout())
            .await?;
        Ok(env.volume)
    }

    /// Attaches a volume to a Droplet in `region`; whether the action completed already.
    pub async fn attach_volume(&self, volume: &str, droplet: u64, region: &str) -> Result<bool, ApiError> {
        let body = VolumeAttach {
            kind: "attach",
            droplet_id: droplet,
            region,
        };
        let env: VolumeActionEnvelope = self
            .call(
                Method::POST,
                &format!("/v2/volumes/{}/actions", escape(volume)),
                Some(&body),
                self.timeout(),
            )
            .await?;
        Ok(env.action.status == "completed")
    }

    /// Every volume of the account.
    pub async fn volumes(&self) -> Result<Vec<Volume>, ApiError> {
        self.all::<VolumeList>("/v2/volumes").await
    }

    /// Deletes a volume; one already gone is no error.
    pub async fn delete_volume(&self, id: &str) -> Result<(), ApiError> {
        self.delete(&format!("/v2/volumes/{}", escape(id))).await
    }

    /// Tags a snapshot (`volume` says which kind), creating the tag first.
    pub async fn tag_snapshot(&self, tag: &str, id: &str, volume: bool) -> Result<(), ApiError> {
        self.tag(tag, id, if volume { "volume_snapshot" } else { "image" })
            .await
    }

    /// Tags a Droplet, creating the tag first (a record the control panel shows).
    pub async fn tag_droplet(&self, tag: &str, id: u64) -> Result<(), ApiError> {
        self.tag(tag, &id.to_string(), "droplet").await
    }

    /// Takes `tag` off a Droplet.
    pub async fn untag_droplet(&self, tag: &str, id: u64) -> Result<(), ApiError> {
        let id = id.to_string();
        self.tag_resources(
            Method::DELETE,
            tag,
            &[TagResource {
                resource_id: &id,
                resource_type: "droplet",
            }],
        )
        .await
    }

    /// Puts `tag` on snapshots, Droplet snapshots (`images`) and `volume_snapshots`, in one
    /// call; the tag is made only when the API says it does not exist yet (a second call, once).
    pub async fn tag_snapshots(
        &self,
        tag: &str,
        images: &[String],
        volume_snapshots: &[String],
    ) -> Result<(), ApiError> {
        let resources: Vec<TagResource> = images
            .iter()
            .map(|id| TagResource {
                resource_id: id,
                resource_type: "image",
            })
            .chain(volume_snapshots.iter().map(|id| TagResource {
                resource_id: id,
                resource_type: "volume_snapshot",
            }))
            .collect();
        match self.tag_resources(Method::POST, tag, &resources).await {
            Err(ApiError::Status { status: 404, .. }) => {
                self.create_tag(tag).await?;
                self.tag_resources(Method::POST, tag, &resources).await
            }
            done => done,
        }
    }

    async fn tag(&self, tag: &str, id: &str, resource_type: &'static str) -> Result<(), ApiError> {
        self.create_tag(tag).await?;
        let resource = [TagResource {
            resource_id: id,
            resource_type,
        }];
        self.tag_resources(Method::POST, tag, &resource).await
    }

    /// Makes `tag` (one that exists already is no error).
    async fn create_tag(&self, tag: &str) -> Result<(), ApiError> {
        let _: serde_json::Value = self
            .call(
                Method::POST,
                "/v2/tags",
                Some(&TagCreate { name: tag }),
                self.timeout(),
            )
            .await?;
        Ok(())
    }

    /// Puts `tag` on resources (POST) or takes it off (DELETE).
    async fn tag_resources(
        &self,
        method: Method,
        tag: &str,
        resources: &[TagResource<'_>],
    ) -> Result<(), ApiError> {
        let body = TagResources { resources };
        let _: serde_json::Value = self
            .call(
                method,
                &format!("/v2/tags/{}/resources", escape(tag)),
                Some(&body),
                self.timeout(),
            )
            .await?;
        Ok(())
    }
}

//! The `local-image` provider: inside the frozen window, copies each frozen filesystem's block
//! device into `image_dir/<snapshot name>/`. For tests, demos, and machines outside DigitalOcean
//! with small disks. The copy reads the devices with O_DIRECT (the page cache of a block device
//! can hold stale pages the filesystem wrote around) and writes sparse images.

use crate::kernel::sys;
use freezeframe_contract::SnapshotInfo;
use crate::transaction::ports::{
    Completion, OwnedNames, ProviderError, Pruned, Registration, Retained, SnapshotProvider,
    Target,
};
use serde::Serialize;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Bytes read per step; also the unit of sparseness.
const CHUNK: usize = 1 << 20;
/// O_DIRECT wants buffers aligned to the logical block size; a page covers every device.
const ALIGN: usize = 4096;

/// The `local-image` provider: copies each frozen block device into `image_dir`.
pub struct LocalImage {
    image_dir: PathBuf,
    devices: Vec<Device>,
    last: Option<Snapshot>,
    /// A dry run's: preflight checks `image_dir` as it stands, making nothing.
    checking_only: bool,
}

#[derive(Debug, Clone)]
struct Device {
    mountpoint: PathBuf,
    fstype: String,
    path: PathBuf,
    size: u64,
}

/// One image in a snapshot's manifest.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
struct Image {
    mountpoint: PathBuf,
    fstype: String,
    device: PathBuf,
    file: String,
    size_bytes: u64,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
struct Manifest {
    name: String,
    images: Vec<Image>,
}

#[derive(Debug, Clone)]
struct Snapshot {
    dir: PathBuf,
    manifest: Manifest,
}

impl LocalImage {
    /// A provider writing into `image_dir`.
    pub fn new(image_dir: PathBuf) -> Self {
        LocalImage {
            image_dir,
            devices: Vec::new(),
            last: None,
            checking_only: false,
        }
    }

    /// A provider for a dry run: its preflight makes and changes nothing (a missing `image_dir`
    /// is checked where it would be made).
    pub fn checking_only(image_dir: PathBuf) -> Self {
        LocalImage {
            checking_only: true,
            ..LocalImage::new(image_dir)
        }
    }
}

/// A file name for the image of `mountpoint`: `root` for `/`, `srv-db` for `/srv/db`.
fn image_label(mountpoint: &Path) -> String {
    let parts: Vec<String> = mountpoint
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(s) => Some(
                s.to_string_lossy()
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect(),
            ),
            _ => None,
        })
        .collect();
    if parts.is_empty() {
        "root".to_string()
    } else {
        parts.join("-")
    }
}

/// Images are copies of whole filesystems (`/etc/shadow` included): readable by their owner
/// alone, whatever the umask.
fn private_file(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

/// Creates `path` (and with `parents`, what leads to it) with mode 0700.
fn private_dir(path: &Path, parents: bool) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(parents)
        .mode(0o700)
        .create(path)
}

/// An existing image_dir that others can read or enter is closed to them, with a warning: the
/// images in it would otherwise be theirs to read.
fn make_private(dir: &Path) -> Result<(), ProviderError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir)
        .map_err(|e| ProviderError::with_source(format!("cannot read image_dir {}", dir.display()), e))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        tracing::warn!(
            "image_dir {} was open to other users (mode {:o}); made it 0700, since its images \
             hold every file of the filesystems copied",
            dir.display(),
            mode & 0o7777
        );
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| {
            ProviderError::with_source(
                format!(
                    "image_dir {} is open to other users (mode {:o}) and cannot be made 0700; \
                     run `chmod 700 {}`",
                    dir.display(),
                    mode & 0o7777,
                    dir.display()
                ),
                e,
            )
        })?;
    }
    Ok(())
}

fn open_device(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let direct = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT | libc::O_CLOEXEC)
        .open(path);
    match direct {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => File::open(path),
        other => other,
    }
}

impl LocalImage {
    /// The snapshots in `image_dir`, oldest first.
    pub async fn list(&mut self) -> Result<Vec<SnapshotInfo>, ProviderError> {
        let entries = match std::fs::read_dir(&self.image_dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            other => other.map_err(|e| {
                ProviderError::with_source(format!("cannot read {}", self.image_dir.display()), e)
            })?,
        };
        let mut found = Vec::new();
        for entry in entries.flatten() {
            // Only complete snapshots have a manifest; a copy cut short has none.
            let manifest_path = entry.path().join("manifest.json");
            let Ok(text) = std::fs::read(&manifest_path) else {
                continue;
            };
            let Ok(manifest) = serde_json::from_slice::<Manifest>(&text) else {
                continue;
            };
            let created = std::fs::metadata(&manifest_path)
                .and_then(|m| m.modified())
                .map(humantime::format_rfc3339_seconds)
                .map(|t| t.to_string())
                .unwrap_or_default();
            found.push(SnapshotInfo {
                id: manifest.name.clone(),
                name: manifest.name,
                created_at: created,
                size_bytes: Some(manifest.images.iter().map(|i| i.size_bytes).sum()),
                drill: None,
                group: None,
                consistency: None,
            });
        }
        found.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.name.cmp(&b.name)));
        Ok(found)
    }
}

#[async_trait::async_trait]
impl SnapshotProvider for LocalImage {
    fn name(&self) -> &'static str {
        "local-image"
    }

    async fn preflight(&mut self, name: &str, targets: &[Target]) -> Result<(), ProviderError> {
        let image_dir = &self.image_dir;
        if image_dir.join(name).exists() {
            // The name the user gave, or their template: theirs to change (exit 2).
            return Err(ProviderError::setup(format!(
                "a snapshot named {name} already exists in {}; choose another name",
                image_dir.display()
            )));
        }
        // A dry run looks at the nearest folder that exists: where image_dir would be made.
        let dir = if self.checking_only {
            image_dir.ancestors().find(|d| d.is_dir()).unwrap_or(Path::new("/"))
        } else {
            private_dir(image_dir, true).map_err(|e| {
                ProviderError::with_source(format!("cannot create image_dir {}", image_dir.display()), e)
            })?;
            make_private(image_dir)?;
            image_dir.as_path()
        };
        match crate::freeze::target_holding(dir, targets) {
            Ok(None) => {}
            Ok(Some(mountpoint)) => {
                // The configuration's to fix (exit 2), as every configuration error.
                return Err(ProviderError::setup(format!(
                    "image_dir {} is on {}, which is frozen while the images are written; put \
                     `local_image.image_dir` on a filesystem that is not frozen",
                    image_dir.display(),
                    mountpoint.display()
                )))
            }
            Err(e) => {
                return Err(ProviderError::with_source(
                    format!("cannot tell which filesystem holds image_dir {}", image_dir.display()),
                    e,
                ))
            }
        }
        self.devices.clear();
        for t in targets {
            let path = PathBuf::from(&t.source);
            let is_block = std::fs::metadata(&path).is_ok_and(|m| m.file_type().is_block_device());
            if !is_block {
                return Err(ProviderError::new(format!(
                    "{} is on {}, which is not a block device; local-image copies block devices",
                    t.mountpoint.display(),
                    t.source
                )));
            }
            let size_error =
                |e| ProviderError::with_source(format!("cannot read the size of {}", path.display()), e);
            let device = open_device(&path).map(OwnedFd::from).map_err(size_error)?;
            let size = sys::block_device_size(&device).map_err(|e| size_error(e.into()))?;
            self.devices.push(Device {
                mountpoint: t.mountpoint.clone(),
                fstype: t.fstype.clone(),
                path,
                size,
            });
        }
        let needed: u64 = self.devices.iter().map(|d| d.size).sum();
        let stat = nix::sys::statvfs::statvfs(dir).map_err(|e| {
            ProviderError::with_source(format!("cannot read free space on {}", dir.display()), e)
        })?;
        let free = stat.blocks_available() as u64 * stat.fragment_size() as u64;
        if free < needed {
            return Err(ProviderError::new(format!(
                "image_dir {} has {} MiB free, and the images may need up to {} MiB; free space or \
                 point `local_image.image_dir` elsewhere",
                image_dir.display(),
                free >> 20,
                needed.div_ceil(1 << 20)
            )));
        }
        Ok(())
    }

    async fn request(
        &mut self,
        name: &str,
        frozen: &[Target],
        _: std::time::Duration,
    ) -> Result<Registration, ProviderError> {
        let dir = self.image_dir.join(name);
        private_dir(&dir, false).map_err(|e| {
            ProviderError::with_source(
                format!(
                    "cannot create {} (does a snapshot with that name exist?)",
                    dir.display()
                ),
                e,
            )
        })?;
        let mut images = Vec::new();
        let mut jobs = Vec::new();
        for t in frozen {
            let device = self
                .devices
                .iter()
                .find(|d| d.mountpoint == t.mountpoint)
                .ok_or_else(|| {
                    ProviderError::new(format!("{} was not checked in preflight", t.mountpoint.display()))
                })?;
            let mut file = format!("{}.img", image_label(&t.mountpoint));
            if images.iter().any(|i: &Image| i.file == file) {
                file = format!("{}-{}.img", image_label(&t.mountpoint), images.len());
            }
            jobs.push((device.clone(), dir.join(&file)));
            images.push(Image {
                mountpoint: device.mountpoint.clone(),
                fstype: device.fstype.clone(),
                device: device.path.clone(),
                file,
                size_bytes: device.size,
            });
        }

        let cancel = Arc::new(AtomicBool::new(false));
        // Dropping the request future (the deadline) stops the copy and discards it.
        let mut stop_on_drop = CancelOnDrop {
            cancel: cancel.clone(),
            discard: Some(dir.clone()),
        };
        let copy_dir = dir.clone();
        let copied = crate::blocking::run(move || {
            fault_point!("local-image-copy");
            let result = jobs
                .iter()
                .try_for_each(|(device, out)| copy_device(&device.path, device.size, out, &cancel));
            if result.is_err() {
                let _ = std::fs::remove_dir_all(&copy_dir);
            }
            result
        })
        .await;
        copied.map_err(|e| ProviderError::with_source("copying the block devices failed", e))?;

        let manifest = Manifest {
            name: name.to_string(),
            images,
        };
        let json =
            serde_json::to_vec_pretty(&manifest).map_err(|e| ProviderError::with_source("manifest", e))?;
        private_file(&dir.join("manifest.json"))
            .and_then(|mut f| std::io::Write::write_all(&mut f, &json))
            .map_err(|e| {
                ProviderError::with_source(format!("cannot write {}/manifest.json", dir.display()), e)
            })?;
        stop_on_drop.discard = None;
        let location = Some(dir.display().to_string());
        self.last = Some(Snapshot { dir, manifest });
        Ok(Registration {
            action_id: name.to_string(),
            completed: true,
            volume_snapshots: Vec::new(),
            location,
        })
    }


    async fn prune(
        &mut self,
        keep_last: usize,
        ours: &dyn OwnedNames,
        dry_run: bool,
    ) -> Result<Retained, ProviderError> {
        let mine: Vec<SnapshotInfo> = self
            .list()
            .await?
            .into_iter()
            .filter(|s| ours.is_ours(&s.name))
            .collect();
        let excess = mine.len().saturating_sub(keep_last);
        let kept = mine.len() - excess;
        let mut pruned = Vec::new();
        for old in mine.into_iter().take(excess) {
            let dir = self.image_dir.join(&old.name);
            if !dry_run {
                std::fs::remove_dir_all(&dir)
                    .map_err(|e| ProviderError::with_source(format!("cannot delete {}", dir.display()), e))?;
            }
            pruned.push(Pruned {
                id: old.id,
                name: old.name,
            });
        }
        Ok(Retained { pruned, kept })
    }

    async fn wait_completed(&mut self, registration: &Registration) -> Result<Completion, ProviderError> {
        let snapshot = self
            .last
            .as_ref()
            .filter(|s| s.manifest.name == registration.action_id)
            .ok_or_else(|| ProviderError::new(format!("no image named {}", registration.action_id)))?;
        let dir = snapshot.dir.clone();
        let files: Vec<PathBuf> = snapshot
            .manifest
            .images
            .iter()
            .map(|i| dir.join(&i.file))
            .collect();
        let size = snapshot.manifest.images.iter().map(|i| i.size_bytes).sum();
        // Complete means durable: flush the images, the manifest and the folder itself.
        crate::blocking::run(move || -> std::io::Result<()> {
            for f in files
                .iter()
                .chain([dir.join("manifest.json"), dir.clone()].iter())
            {
                File::open(f)?.sync_all()?;
            }
            Ok(())
        })
        .await
        .map_err(|e| ProviderError::with_source("cannot flush the images to disk", e))?;
        Ok(Completion {
            snapshot_id: Some(snapshot.dir.display().to_string()),
            size_bytes: Some(size),
        })
    }
}

/// Stops the copy, and discards the snapshot folder unless the request completed.
struct CancelOnDrop {
    cancel: Arc<AtomicBool>,
    discard: Option<PathBuf>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::SeqCst);
        if let Some(dir) = &self.discard {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A heap buffer aligned for O_DIRECT.
struct AlignedBuf {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

impl AlignedBuf {
    fn new(len: usize) -> Self {
        let layout = std::alloc::Layout::from_size_align(len, ALIGN).expect("valid layout");
        // SAFETY: `layout` has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        AlignedBuf { ptr, layout }
    }
    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` is a live allocation of `layout.size()` initialised bytes owned by self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

/// Copies `size` bytes of `device` into a new sparse file `out`, stopping if `cancel` is set.
pub fn copy_device(device: &Path, size: u64, out: &Path, cancel: &AtomicBool) -> std::io::Result<()> {
    if cancel.load(Ordering::SeqCst) {
        return Err(abandoned());
    }
    let output = private_file(out)?;
    copy_part(device, 0..size, &output, cancel)?;
    output.set_len(size)
}

/// Copies the bytes `range` of `device` to the same offsets of `output`, leaving holes where the
/// device holds zeros, stopping if `cancel` is set: one piece of a copy made over time.
pub fn copy_part(
    device: &Path,
    range: std::ops::Range<u64>,
    output: &File,
    cancel: &AtomicBool,
) -> std::io::Result<()> {
    let input = open_device(device)?;
    let mut buf = AlignedBuf::new(CHUNK);
    let mut offset = range.start;
    while offset < range.end {
        if cancel.load(Ordering::SeqCst) {
            return Err(abandoned());
        }
        let want = usize::try_from((range.end - offset).min(CHUNK as u64)).unwrap_or(CHUNK);
        let chunk = &mut buf.as_mut_slice()[..want];
        let n = input.read_at(chunk, offset)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("{} ended at byte {offset} of {}", device.display(), range.end),
            ));
        }
        let data = &chunk[..n];
        if data.iter().any(|&b| b != 0) {
            output.write_all_at(data, offset)?;
        }
        offset += n as u64;
    }
    Ok(())
}

fn abandoned() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::Interrupted,
        "the copy was abandoned at the deadline",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_labels_are_file_names() {
        assert_eq!(image_label(Path::new("/")), "root");
        assert_eq!(image_label(Path::new("/srv/db")), "srv-db");
        assert_eq!(image_label(Path::new("/mnt/my disk")), "mnt-my_disk");
    }

    #[test]
    fn a_copy_is_exact_and_sparse() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let mut data = vec![0u8; 3 * CHUNK + 4096];
        data[10] = 1;
        data[3 * CHUNK + 100] = 7;
        std::fs::write(&src, &data).unwrap();
        let out = dir.path().join("out.img");
        copy_device(&src, data.len() as u64, &out, &AtomicBool::new(false)).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), data);
        use std::os::unix::fs::MetadataExt;
        let blocks = std::fs::metadata(&out).unwrap().blocks() * 512;
        assert!(
            blocks < data.len() as u64,
            "zero chunks are holes ({blocks} bytes allocated)"
        );
    }

    #[test]
    fn a_cancelled_copy_stops() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::write(&src, vec![1u8; CHUNK]).unwrap();
        let err = copy_device(&src, CHUNK as u64, &dir.path().join("o"), &AtomicBool::new(true)).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::Interrupted);
    }
}

//! The local-disk store passes the shared conformance suite.

use ferry_store::{LocalStore, conformance};

#[tokio::test]
async fn local_store_passes_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    conformance::run_all(&store).await;
}

#[tokio::test]
async fn committed_files_sit_at_their_real_paths() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    conformance::promote_creates_folders_and_refuses_file_as_folder(&store).await;
    assert!(dir.path().join("spaces/conf/f/g/h/i.bin").is_file());
    assert!(
        dir.path()
            .join("staging")
            .read_dir()
            .unwrap()
            .next()
            .is_none()
    );
}

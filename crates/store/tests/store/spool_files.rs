//! A small message never touches the spool's disk; a large one spills to a file, and a message
//! that is not accepted leaves no file in the spool, at once: a DATA refused with 451 because
//! the disk is full, a client gone mid-message, a scratch file given up.

use std::io::Write;
use std::path::Path;

use store::Spool;

fn incoming(root: &Path) -> usize {
    std::fs::read_dir(root.join("incoming")).unwrap().count()
}

#[test]
fn a_message_stays_in_memory_until_it_outgrows_the_inline_limit() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap().with_inline_limit(1000);

    let mut small = spool.create().unwrap();
    small.append(&[b'a'; 600]).unwrap();
    small.append(&[b'b'; 400]).unwrap();
    assert_eq!(incoming(dir.path()), 0, "a small message made a file");
    let small = small.finish().unwrap();
    assert!(small.is_inline());
    assert_eq!(small.len, 1000);

    let mut large = spool.create().unwrap();
    large.append(&[b'a'; 600]).unwrap();
    assert_eq!(incoming(dir.path()), 0);
    large.append(&[b'b'; 401]).unwrap();
    assert_eq!(
        incoming(dir.path()),
        1,
        "past the limit, the message is in a file"
    );
    let large = large.finish().unwrap();
    assert!(!large.is_inline());
    let mut expected = vec![b'a'; 600];
    expected.extend([b'b'; 401]);
    assert_eq!(
        large.body().to_vec().unwrap(),
        expected,
        "what was held went first"
    );
    assert_eq!(small.body().len(), 1000);
    drop(large);
    assert_eq!(incoming(dir.path()), 0);
}

#[test]
fn a_message_file_dropped_before_it_is_placed_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap().with_inline_limit(0);

    // The client went away in the middle of DATA.
    let mut file = spool.create().unwrap();
    file.append(b"Subject: half\r\n\r\nthe first ha").unwrap();
    assert_eq!(incoming(dir.path()), 1);
    drop(file);
    assert_eq!(incoming(dir.path()), 0, "an abandoned message stayed");

    // Complete on disk, but its queue row never came.
    let mut file = spool.create().unwrap();
    file.append(b"Subject: whole\r\n\r\nbody\r\n").unwrap();
    let finished = file.finish().unwrap();
    assert_eq!(incoming(dir.path()), 1);
    drop(finished);
    assert_eq!(incoming(dir.path()), 0, "a message never queued stayed");
}

#[test]
fn a_message_that_cannot_be_finished_on_a_full_disk_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let _disk = testkit::SmallDisk::mount(dir.path(), "256k");
    let root = dir.path().join("spool");
    let spool = Spool::open(&root).unwrap().with_inline_limit(0);
    let mut ballast = std::fs::File::create(dir.path().join("ballast")).unwrap();
    while ballast.write_all(&[0u8; 4096]).is_ok() {}

    // A small message sits in the write buffer until the end of DATA: finishing it fails.
    let mut file = spool.create().unwrap();
    file.append(&[b'x'; 10_000]).unwrap();
    let e = file.finish().unwrap_err();
    assert_eq!(e.raw_os_error(), Some(28), "{e}");
    assert_eq!(incoming(&root), 0, "the refused message's file stayed");
}

//! Fuzz targets of replication's decoders (kept out of the byte path's files):
//! the control frames (`wire::receive`), the disk plan (`DiskPlan::validate`)
//! and the chunk framing (`transfer::receive_chunks`). Decoded values go on
//! through the real checks, and whatever those accept is held to what the
//! receiver relies on: every chunk inside the file and inside its 1 MiB cell, in
//! order, no sum past 2^64; a frame costs the memory of the bytes that arrived,
//! whatever its length prefix promised.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::OnceLock;

use proptest::prelude::*;

use super::sparse::{self, CHUNK, Chunk, DiskPlan, MAX_CHUNKS, MAX_FILE, Partial};
use super::transfer::{needed_bytes, receive_chunks};
use super::wire::{self, Answer, Message, Offer, Outcome};
use crate::fuzzing::{CASES, alloc, bytes_like, config};
use crate::model::ServiceSpec;

/// Heap a frame may cost per byte that arrived (buffer growth, then the
/// decoded value: a chunk written as `[0,1,""]` becomes a 40-byte struct),
/// plus a constant for the runtime and the error.
const BYTES_PER_INPUT_BYTE: usize = 32;
const ALLOC_SLACK: usize = 64 << 10;

/// Panics unless `plan` holds what a receiver relies on (computed in u128, so
/// this check itself cannot wrap).
pub(crate) fn assert_sound(plan: &DiskPlan, max_file: u64) {
    assert!(plan.file_size <= max_file, "file_size {}", plan.file_size);
    assert!(plan.chunks.len() <= MAX_CHUNKS);
    let grid = u128::from(CHUNK);
    let mut end = 0u128;
    for c in &plan.chunks {
        let start = u128::from(c.offset);
        let stop = start + u128::from(c.len);
        assert!(c.len > 0 && start >= end, "in order, apart: {c:?}");
        assert!(stop <= u128::from(plan.file_size), "inside the file: {c:?}");
        assert_eq!(start / grid, (stop - 1) / grid, "inside its cell: {c:?}");
        assert!(c.sha256.len() == 64 && c.sha256.bytes().all(|b| b.is_ascii_hexdigit()));
        end = stop;
    }
    // What the sender and receiver compute from it must not overflow either.
    let all: Vec<u32> = (0..plan.chunks.len() as u32).collect();
    assert_eq!(needed_bytes(plan, &all).unwrap(), plan.data_bytes());
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

fn sha(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// A plan of three chunks in three cells of a 4 MiB file.
fn sample_plan() -> DiskPlan {
    let chunk = |offset, len| Chunk {
        offset,
        len,
        sha256: sha(&vec![7u8; len as usize]),
    };
    DiskPlan {
        format: "qcow2".into(),
        file_size: 4 * CHUNK,
        virtual_size: 64 << 20,
        allocated: 3 * 4096,
        chunks: vec![
            chunk(0, 4096),
            chunk(CHUNK + 100, 2000),
            chunk(4 * CHUNK - 4096, 4096),
        ],
        file_sha256: Some("ab".repeat(32)),
    }
}

pub(crate) fn sample_offer() -> Offer {
    Offer {
        name: "web-1-r1".into(),
        source_vm: "web-1".into(),
        source_uuid: "0b0e8a6c-5a6f-4a51-9d7e-2f4b4a1c9e11".into(),
        vcpus: 1,
        memory_mib: 256,
        image: "default".into(),
        services: vec![ServiceSpec {
            name: "web".into(),
            kind: "http".into(),
            port: 80,
            tags: vec![("tier".into(), "front".into())],
            ..ServiceSpec::default()
        }],
        disk: Some(sample_plan()),
        auto: false,
    }
}

fn valid_frames() -> Vec<Vec<u8>> {
    vec![
        wire::encode(&sample_offer()).unwrap(),
        wire::encode(&Offer {
            disk: None,
            ..sample_offer()
        })
        .unwrap(),
        wire::encode(&Answer::Accept { need: vec![0, 2] }).unwrap(),
        wire::encode(&Answer::refuse(
            "peer x is not allowed to control this host",
        ))
        .unwrap(),
        wire::encode(&Outcome::Started {
            ip: "10.77.0.12".into(),
            disk_sha256: Some("ab".repeat(32)),
        })
        .unwrap(),
        wire::encode(&Outcome::failed("the received disk does not match")).unwrap(),
    ]
}

/// Length prefixes around the limits, or anything.
fn declared() -> impl Strategy<Value = u32> {
    let near = |limit: usize| (limit as u32 - 2)..=(limit as u32 + 2);
    prop_oneof![
        any::<u32>(),
        near(Offer::LIMIT),
        near(Answer::LIMIT),
        near(Outcome::LIMIT),
        Just(u32::MAX),
    ]
}

/// A frame, mutated; or a body (valid, mutated) under any length prefix.
pub(crate) fn frames() -> impl Strategy<Value = Vec<u8>> {
    let bodies: Vec<Vec<u8>> = valid_frames()
        .into_iter()
        .map(|f| f[4..].to_vec())
        .collect();
    prop_oneof![
        3 => bytes_like(valid_frames()),
        1 => (declared(), bytes_like(bodies)).prop_map(|(len, body)| {
            let mut frame = len.to_be_bytes().to_vec();
            frame.extend(body);
            frame
        }),
        // Well-formed JSON carrying hostile numbers: plans and chunk requests.
        2 => plans().prop_map(|plan| {
            wire::encode(&Offer {
                disk: Some(plan),
                ..sample_offer()
            })
            .unwrap()
        }),
        1 => proptest::collection::vec(prop_oneof![0..4u32, any::<u32>()], 0..8)
            .prop_map(|need| wire::encode(&Answer::Accept { need }).unwrap()),
    ]
}

/// Receives a `T` from `input`: the result and the heap it took at most, which
/// must follow the input's length, not the prefix's.
pub(crate) fn receive<T: Message>(input: &[u8]) -> anyhow::Result<T> {
    let rt = runtime();
    let (result, peak) = alloc::peak(|| rt.block_on(wire::receive::<_, T>(&mut &input[..])));
    let budget = BYTES_PER_INPUT_BYTE * input.len() + ALLOC_SLACK;
    assert!(
        peak <= budget,
        "{}: {peak} bytes allocated for {} bytes of input",
        T::WHAT,
        input.len()
    );
    if let Err(e) = &result {
        assert!(
            e.to_string().contains(T::WHAT),
            "names the {}: {e}",
            T::WHAT
        );
    }
    result
}

/// Files of the chunk-framing target: the sample's source data and its plan.
struct Source {
    plan: DiskPlan,
    data: Vec<u8>,
}

/// Three chunks of data (one of them one byte long) in a sparse 3 MiB file.
fn source() -> &'static Source {
    static SOURCE: OnceLock<Source> = OnceLock::new();
    SOURCE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("src.raw");
        let f = File::create(&path).unwrap();
        f.set_len(3 * CHUNK).unwrap();
        f.write_all_at(&[1u8; 3000], 100).unwrap();
        f.write_all_at(&[2u8; 1], CHUNK).unwrap();
        f.write_all_at(&[3u8; 4096], 3 * CHUNK - 4096).unwrap();
        let plan = sparse::plan(&path).unwrap();
        let data = std::fs::read(&path).unwrap();
        assert_eq!(plan.chunks.len(), 3, "{plan:?}");
        Source { plan, data }
    })
}

/// What an honest sender writes for `need`: each chunk's index and bytes.
fn chunk_stream(src: &Source, need: &[u32]) -> Vec<u8> {
    let mut out = Vec::new();
    for &i in need {
        let c = &src.plan.chunks[i as usize];
        out.extend_from_slice(&i.to_be_bytes());
        let at = c.offset as usize;
        out.extend_from_slice(&src.data[at..at + c.len as usize]);
    }
    out
}

/// One chunk of a generated plan.
#[derive(Debug, Clone)]
enum Spec {
    /// `gap` bytes after the chunk before, no longer than the rest of its cell:
    /// one the planner could make.
    Planned { gap: u64, len: u32 },
    /// Anywhere (near 2^64, on and around the grid; None: `gap` after the chunk
    /// before), with any length.
    Raw {
        offset: Option<u64>,
        gap: u64,
        len: u32,
    },
}

fn spec() -> impl Strategy<Value = Spec> {
    let offset = prop_oneof![
        any::<u64>().prop_map(Some),
        (0..1u64 << 22).prop_map(|d| Some(u64::MAX - d)),
        (0..1u64 << 44, -3i64..3).prop_map(|(cell, d)| Some((cell * CHUNK).wrapping_add_signed(d))),
        Just(None),
    ];
    let len = prop_oneof![
        any::<u32>(),
        0..=CHUNK as u32 + 1,
        Just(CHUNK as u32),
        Just(u32::MAX),
    ];
    prop_oneof![
        6 => (0..2 * CHUNK, any::<u32>()).prop_map(|(gap, len)| Spec::Planned { gap, len }),
        2 => (offset, 0..CHUNK, len).prop_map(|(offset, gap, len)| Spec::Raw { offset, gap, len }),
    ]
}

/// Where a chunk of `spec` goes after a chunk that ended at `end`.
fn place(spec: Spec, end: u64) -> (u64, u32) {
    match spec {
        Spec::Planned { gap, len } => {
            let offset = end.saturating_add(gap);
            let room = CHUNK - offset % CHUNK;
            (offset, 1 + (u64::from(len) % room) as u32)
        }
        Spec::Raw { offset, gap, len } => (offset.unwrap_or(end.saturating_add(gap)), len),
    }
}

/// A file size: most often one that holds the chunks (and a little more).
#[derive(Debug, Clone)]
enum Size {
    Absolute(u64),
    /// This much past the last chunk's end.
    Fit(u64),
}

fn file_size() -> impl Strategy<Value = Size> {
    prop_oneof![
        1 => any::<u64>().prop_map(Size::Absolute),
        1 => prop_oneof![Just(MAX_FILE), Just(MAX_FILE + 1), Just(u64::MAX)].prop_map(Size::Absolute),
        6 => (0..2 * CHUNK).prop_map(Size::Fit),
    ]
}

fn checksum() -> impl Strategy<Value = String> {
    prop_oneof![
        30 => Just("0123456789abcdefABCDEF".repeat(3)[..64].to_string()),
        1 => Just("ab".repeat(31)),
        1 => Just("zz".repeat(32)),
        1 => Just("é".repeat(32)),
    ]
}

fn plans() -> impl Strategy<Value = DiskPlan> {
    let chunks = proptest::collection::vec((spec(), checksum()), 0..8);
    (file_size(), chunks).prop_map(|(file_size, specs)| {
        let mut end = 0u64;
        let chunks = specs
            .into_iter()
            .map(|(spec, sha256)| {
                let (offset, len) = place(spec, end);
                end = offset.saturating_add(u64::from(len));
                Chunk {
                    offset,
                    len,
                    sha256,
                }
            })
            .collect();
        let file_size = match file_size {
            Size::Absolute(size) => size,
            Size::Fit(slack) => end.saturating_add(slack),
        };
        DiskPlan {
            format: "qcow2".into(),
            file_size,
            chunks,
            ..DiskPlan::default()
        }
    })
}

proptest! {
    #![proptest_config(config(CASES))]

    /// Offers, answers and outcomes from the other end of a replication
    /// stream. Each input is read as all three; what decodes goes on to the
    /// checks that act on it: an offer's plan to `validate` (sound if
    /// accepted), an answer's `need` to the sender's `needed_bytes` (within the
    /// plan, each chunk once).
    #[test]
    fn fuzz_replica_control_frames(input in frames()) {
        if let Ok(offer) = receive::<Offer>(&input)
            && let Some(plan) = &offer.disk
            && plan.validate(MAX_FILE).is_ok()
        {
            assert_sound(plan, MAX_FILE);
        }
        if let Ok(Answer::Accept { need }) = receive::<Answer>(&input) {
            let plan = sample_plan();
            if let Ok(total) = needed_bytes(&plan, &need) {
                assert!(need.windows(2).all(|w| w[0] < w[1]), "{need:?}");
                assert!(need.iter().all(|&i| (i as usize) < plan.chunks.len()));
                assert!(total <= plan.data_bytes());
            }
        }
        let _ = receive::<Outcome>(&input);
    }

    /// Disk plans with offsets and lengths chosen to test the sums (near 2^64,
    /// on the grid's edges, past the file), checked against the largest file
    /// accepted and against no limit at all (so chunks in the last cell below
    /// 2^64 are accepted too). Accepted ones are sound; those a receiver may
    /// get open a partial file that asks for every chunk (a tenth of them).
    #[test]
    fn fuzz_disk_plan_validate(plan in plans(), open in proptest::bool::weighted(0.1)) {
        if plan.validate(u64::MAX).is_ok() {
            assert_sound(&plan, u64::MAX);
        }
        if plan.validate(MAX_FILE).is_ok() {
            assert_sound(&plan, MAX_FILE);
            // A file per case costs a millisecond: one accepted plan in ten.
            if !open {
                return Ok(());
            }
            let dir = tempfile::tempdir().unwrap();
            let (_, need) = Partial::open(&dir.path().join("p"), &plan).unwrap();
            assert_eq!(need.len(), plan.chunks.len());
        }
    }
}

proptest! {
    #![proptest_config(config(CASES / 10))]

    /// The chunk stream after an accepted offer (index, then the chunk's bytes),
    /// mutated: the receiver ends with the source's bytes or an error naming
    /// the chunk or the cut, never with other bytes in its file.
    #[test]
    fn fuzz_replica_chunk_frames(stream in prop_oneof![
        1 => Just(chunk_stream(source(), &[0, 1, 2])),
        4 => bytes_like(vec![
            chunk_stream(source(), &[0, 1, 2]),
            chunk_stream(source(), &[0, 2, 1]),
        ]),
    ]) {
        let src = source();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        let (partial, need) = Partial::open(&path, &src.plan).unwrap();
        let rt = runtime();
        let received = rt.block_on(receive_chunks(&mut stream.as_slice(), &src.plan, &need, partial, |_, _| {}));
        match received {
            Ok(partial) => {
                let digest = partial.finish(&src.plan).unwrap();
                assert_eq!(digest, src.plan.file_sha256);
                assert_eq!(std::fs::read(&path).unwrap(), src.data);
            }
            Err(e) => {
                let e = format!("{e:#}");
                assert!(e.contains("chunk") || e.contains("stream cut"), "{e}");
            }
        }
    }
}

/// Frames at their limits: `json` (the encoding of `message`) padded with
/// spaces to `declared` bytes, of which `sent` arrive.
fn at_the_limit<T>(message: &T, json: &[u8], declared: u32, sent: u32)
where
    T: Message + PartialEq + std::fmt::Debug,
{
    let sent = if declared as usize > T::LIMIT {
        // Nothing after the prefix is read: a few bytes are enough.
        sent.min(16)
    } else {
        sent.min(declared)
    } as usize;
    let mut input = declared.to_be_bytes().to_vec();
    input.extend_from_slice(&json[..json.len().min(sent)]);
    input.resize(4 + sent, b' ');
    let result = receive::<T>(&input);
    let declared = declared as usize;
    if declared > T::LIMIT {
        let (_, peak) = alloc::peak(|| drop(receive::<T>(&input[..4])));
        assert!(
            peak < ALLOC_SLACK,
            "a refused prefix costs nothing ({peak} bytes)"
        );
        assert!(result.unwrap_err().to_string().contains("too large"));
    } else if sent < declared {
        let err = result.unwrap_err().to_string();
        assert!(
            err.contains(&format!("cut after {sent} of {declared}")),
            "{err}"
        );
    } else if declared >= json.len() {
        assert_eq!(&result.unwrap(), message);
    } else {
        assert!(result.unwrap_err().to_string().contains("malformed"));
    }
}

/// The largest message of each kind, and its encoding.
struct Largest {
    offer: (Offer, Vec<u8>),
    answer: (Answer, Vec<u8>),
    outcome: (Outcome, Vec<u8>),
}

fn largest() -> &'static Largest {
    fn encoded<T: Message>(message: T) -> (T, Vec<u8>) {
        let json = serde_json::to_vec(&message).unwrap();
        (message, json)
    }
    static LARGEST: OnceLock<Largest> = OnceLock::new();
    LARGEST.get_or_init(|| Largest {
        offer: encoded(sample_offer()),
        answer: encoded(Answer::Accept {
            need: (u32::MAX - MAX_CHUNKS as u32..u32::MAX).collect(),
        }),
        outcome: encoded(Outcome::failed(&"x".repeat(8192))),
    })
}

/// The prefixes tried: just under, at, just over and far over `limit`.
fn around(limit: usize) -> [u32; 4] {
    let limit = limit as u32;
    [limit - 1, limit, limit + 1, u32::MAX]
}

/// Every kind of frame whole at, under and over its limit: 64 MiB of input
/// for an offer, a list of every chunk for an answer.
#[test]
fn frames_at_their_limits_whole() {
    let l = largest();
    for declared in around(Offer::LIMIT) {
        at_the_limit(&l.offer.0, &l.offer.1, declared, declared);
    }
    for declared in around(Answer::LIMIT) {
        at_the_limit(&l.answer.0, &l.answer.1, declared, declared);
    }
    for declared in around(Outcome::LIMIT) {
        at_the_limit(&l.outcome.0, &l.outcome.1, declared, declared);
    }
}

/// Cases of the target at the limits (each reads 12 frames of up to 64 MiB);
/// a long campaign (`PROPTEST_CASES`) runs at most 256.
fn limits_config() -> proptest::test_runner::Config {
    let config = config(16);
    proptest::test_runner::Config {
        cases: config.cases.min(256),
        ..config
    }
}

proptest! {
    #![proptest_config(limits_config())]

    /// Each kind of frame under, at and over its own limit, cut at a random
    /// point (up to 64 MiB of input for an offer): refused for what arrived,
    /// having allocated in proportion to it.
    #[test]
    fn fuzz_replica_frames_at_the_limits(cut in any::<u32>()) {
        let l = largest();
        for declared in around(Offer::LIMIT) {
            at_the_limit(&l.offer.0, &l.offer.1, declared, cut % declared);
        }
        for declared in around(Answer::LIMIT) {
            at_the_limit(&l.answer.0, &l.answer.1, declared, cut % declared);
        }
        for declared in around(Outcome::LIMIT) {
            at_the_limit(&l.outcome.0, &l.outcome.1, declared, cut % declared);
        }
    }
}

#[test]
fn the_largest_answer_fits_its_limit() {
    let frame = wire::encode(&largest().answer.0).unwrap();
    assert!(frame.len() > Answer::LIMIT / 2, "{} bytes", frame.len());
}

//! The unsafe corner of the hypervisor module: the libvirt calls the `virt` crate
//! does not wrap safely. Bulk domain stats (`virConnectGetAllDomainStats`, whose
//! records `virt` hands out as raw pointers and never frees) and domain lifecycle
//! events (libvirt's default event loop and `virConnectDomainEventRegisterAny`).
//! Everything `unsafe` in the hypervisor code lives in this file; callers get
//! owned Rust values.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::ptr;
use std::sync::OnceLock;

use virt::connect::Connect;
use virt::error::Error;
use virt::sys;

/// One typed parameter's value (virTypedParameter).
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    Int(i64),
    UInt(u64),
    Float(f64),
    Bool(bool),
    Str(String),
}

impl ParamValue {
    /// The value as an unsigned counter, if it is an integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            ParamValue::Int(v) => u64::try_from(v).ok(),
            ParamValue::UInt(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            ParamValue::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// The stats libvirt reported for one domain, copied out of its record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatsRecord {
    pub name: String,
    pub uuid: String,
    /// (field, value) in libvirt's order, e.g. ("block.0.wr.bytes", UInt(..)).
    pub params: Vec<(String, ParamValue)>,
}

/// One `virConnectGetAllDomainStats` call: `stats` is a mask of
/// `VIR_DOMAIN_STATS_*`, `flags` of `VIR_CONNECT_GET_ALL_DOMAINS_STATS_*`.
pub fn all_domain_stats(conn: &Connect, stats: u32, flags: u32) -> Result<Vec<StatsRecord>, Error> {
    let mut list: *mut sys::virDomainStatsRecordPtr = ptr::null_mut();
    // SAFETY: the connection pointer is valid while `conn` lives; libvirt fills
    // `list` with a NULL-terminated array that we own and free below.
    let n = unsafe { sys::virConnectGetAllDomainStats(conn.as_ptr(), stats, &mut list, flags) };
    if n < 0 {
        return Err(Error::last_error());
    }
    let mut records = Vec::with_capacity(n as usize);
    for i in 0..n as usize {
        // SAFETY: i < n entries, each a valid record pointer until the list is freed.
        let record = unsafe { &**list.add(i) };
        records.push(copy_record(record));
    }
    // SAFETY: frees the records, their params and their domain references.
    unsafe { sys::virDomainStatsRecordListFree(list) };
    Ok(records)
}

fn copy_record(record: &sys::virDomainStatsRecord) -> StatsRecord {
    let (name, uuid) = domain_identity(record.dom);
    let count = usize::try_from(record.nparams).unwrap_or(0);
    let params = if record.params.is_null() || count == 0 {
        Vec::new()
    } else {
        // SAFETY: libvirt gives `nparams` consecutive parameters at `params`.
        let slice = unsafe { std::slice::from_raw_parts(record.params, count) };
        slice.iter().filter_map(copy_param).collect()
    };
    StatsRecord { name, uuid, params }
}

fn copy_param(p: &sys::virTypedParameter) -> Option<(String, ParamValue)> {
    // The field is a fixed 80-byte buffer, NUL-terminated; do not trust that blindly.
    let bytes: Vec<u8> = p
        .field
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    let field = String::from_utf8_lossy(&bytes).into_owned();
    // SAFETY: `type_` says which union member libvirt wrote.
    let value = unsafe {
        match p.type_ as u32 {
            sys::VIR_TYPED_PARAM_INT => ParamValue::Int(p.value.i as i64),
            sys::VIR_TYPED_PARAM_UINT => ParamValue::UInt(p.value.ui as u64),
            sys::VIR_TYPED_PARAM_LLONG => ParamValue::Int(p.value.l),
            sys::VIR_TYPED_PARAM_ULLONG => ParamValue::UInt(p.value.ul),
            sys::VIR_TYPED_PARAM_DOUBLE => ParamValue::Float(p.value.d),
            sys::VIR_TYPED_PARAM_BOOLEAN => ParamValue::Bool(p.value.b != 0),
            sys::VIR_TYPED_PARAM_STRING => ParamValue::Str(c_string(p.value.s)?),
            _ => return None,
        }
    };
    Some((field, value))
}

/// Name and UUID of a domain pointer we do not own.
fn domain_identity(dom: sys::virDomainPtr) -> (String, String) {
    if dom.is_null() {
        return (String::new(), String::new());
    }
    // SAFETY: `dom` is valid for the call; the name belongs to the domain object.
    let name = unsafe { c_string(sys::virDomainGetName(dom) as *mut c_char) }.unwrap_or_default();
    let mut buf = [0 as c_char; sys::VIR_UUID_STRING_BUFLEN as usize];
    // SAFETY: the buffer has the size libvirt documents for a UUID string.
    let uuid = if unsafe { sys::virDomainGetUUIDString(dom, buf.as_mut_ptr()) } == 0 {
        unsafe { c_string(buf.as_mut_ptr()) }.unwrap_or_default()
    } else {
        String::new()
    };
    (name, uuid)
}

/// # Safety
/// `s` is NULL or a NUL-terminated string valid for the call.
unsafe fn c_string(s: *mut c_char) -> Option<String> {
    if s.is_null() {
        return None;
    }
    Some(unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned())
}

// ---------------------------------------------------------------------------
// Events

/// What happened to a domain, as libvirt's lifecycle event says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    Defined,
    Undefined,
    Started,
    /// Paused (including the pause at the end of an outgoing migration).
    Suspended,
    Resumed,
    Stopped,
    /// Stopped because it migrated to another host.
    MigratedAway,
    /// Arrived by migration.
    MigratedIn,
    Shutdown,
    Crashed,
    Other,
}

impl Lifecycle {
    fn from_raw(event: c_int, detail: c_int) -> Lifecycle {
        let (event, detail) = (event as u32, detail as u32);
        match event {
            sys::VIR_DOMAIN_EVENT_DEFINED => Lifecycle::Defined,
            sys::VIR_DOMAIN_EVENT_UNDEFINED => Lifecycle::Undefined,
            sys::VIR_DOMAIN_EVENT_STARTED if detail == sys::VIR_DOMAIN_EVENT_STARTED_MIGRATED => {
                Lifecycle::MigratedIn
            }
            sys::VIR_DOMAIN_EVENT_STARTED => Lifecycle::Started,
            sys::VIR_DOMAIN_EVENT_SUSPENDED | sys::VIR_DOMAIN_EVENT_PMSUSPENDED => {
                Lifecycle::Suspended
            }
            sys::VIR_DOMAIN_EVENT_RESUMED => Lifecycle::Resumed,
            sys::VIR_DOMAIN_EVENT_STOPPED if detail == sys::VIR_DOMAIN_EVENT_STOPPED_MIGRATED => {
                Lifecycle::MigratedAway
            }
            sys::VIR_DOMAIN_EVENT_STOPPED if detail == sys::VIR_DOMAIN_EVENT_STOPPED_CRASHED => {
                Lifecycle::Crashed
            }
            sys::VIR_DOMAIN_EVENT_STOPPED => Lifecycle::Stopped,
            sys::VIR_DOMAIN_EVENT_SHUTDOWN => Lifecycle::Shutdown,
            sys::VIR_DOMAIN_EVENT_CRASHED => Lifecycle::Crashed,
            _ => Lifecycle::Other,
        }
    }
}

/// A lifecycle event for the named domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainEvent {
    pub name: String,
    pub what: Lifecycle,
}

/// Where an event callback sends what it sees.
pub type EventSink = Box<dyn Fn(DomainEvent) + Send + Sync>;

/// Registers libvirt's default event loop implementation and runs it on a thread
/// of its own. Must happen before the connection that wants events is opened;
/// later calls do nothing.
pub fn ensure_event_loop() -> Result<(), String> {
    static STARTED: OnceLock<Result<(), String>> = OnceLock::new();
    STARTED
        .get_or_init(|| {
            // SAFETY: no preconditions; called once.
            if unsafe { sys::virEventRegisterDefaultImpl() } < 0 {
                return Err(Error::last_error().message().to_string());
            }
            std::thread::Builder::new()
                .name("libvirt-events".into())
                .spawn(|| {
                    loop {
                        // SAFETY: the default implementation was registered above.
                        if unsafe { sys::virEventRunDefaultImpl() } < 0 {
                            std::thread::sleep(std::time::Duration::from_millis(100));
                        }
                    }
                })
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .clone()
}

/// Calls `sink` for every lifecycle event of every domain of `conn`, from the
/// event loop's thread (keep it quick). Returns the callback id.
pub fn watch_lifecycle(conn: &Connect, sink: EventSink) -> Result<c_int, Error> {
    let opaque = Box::into_raw(Box::new(sink)) as *mut c_void;
    // SAFETY: libvirt calls `on_lifecycle` with `opaque` until deregistration and
    // then `free_sink`, which reclaims the box. The function pointer type is the
    // generic one libvirt documents for RegisterAny (cast per event id).
    let id = unsafe {
        let cb: unsafe extern "C" fn(
            sys::virConnectPtr,
            sys::virDomainPtr,
            c_int,
            c_int,
            *mut c_void,
        ) -> c_int = on_lifecycle;
        sys::virConnectDomainEventRegisterAny(
            conn.as_ptr(),
            ptr::null_mut(),
            sys::VIR_DOMAIN_EVENT_ID_LIFECYCLE as c_int,
            Some(std::mem::transmute::<
                unsafe extern "C" fn(
                    sys::virConnectPtr,
                    sys::virDomainPtr,
                    c_int,
                    c_int,
                    *mut c_void,
                ) -> c_int,
                unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, *mut c_void),
            >(cb)),
            opaque,
            Some(free_sink),
        )
    };
    if id < 0 {
        // SAFETY: libvirt did not take the box: reclaim it.
        drop(unsafe { Box::from_raw(opaque as *mut EventSink) });
        return Err(Error::last_error());
    }
    Ok(id)
}

unsafe extern "C" fn on_lifecycle(
    _conn: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    event: c_int,
    detail: c_int,
    opaque: *mut c_void,
) -> c_int {
    // A panic must not unwind into C.
    let _ = std::panic::catch_unwind(|| {
        let (name, _) = domain_identity(dom);
        // SAFETY: `opaque` is the box registered in watch_lifecycle, alive until free_sink.
        let sink = unsafe { &*(opaque as *const EventSink) };
        sink(DomainEvent {
            name,
            what: Lifecycle::from_raw(event, detail),
        });
    });
    0
}

unsafe extern "C" fn free_sink(opaque: *mut c_void) {
    if !opaque.is_null() {
        // SAFETY: the pointer came from Box::into_raw in watch_lifecycle.
        drop(unsafe { Box::from_raw(opaque as *mut EventSink) });
    }
}

/// Why libvirt closed a connection (virConnectCloseReason), in words.
pub fn close_reason(reason: c_int) -> &'static str {
    match reason as u32 {
        sys::VIR_CONNECT_CLOSE_REASON_EOF => "the daemon closed the connection",
        sys::VIR_CONNECT_CLOSE_REASON_KEEPALIVE => "the daemon stopped answering keepalives",
        sys::VIR_CONNECT_CLOSE_REASON_CLIENT => "closed by this process",
        _ => "connection error",
    }
}

/// Where a close callback sends libvirt's reason (see `close_reason`).
pub type CloseSink = Box<dyn Fn(c_int) + Send + Sync>;

/// Calls `sink` (from the event loop's thread) when libvirt notices that `conn`
/// died: the daemon exited, closed the socket or missed its keepalives.
pub fn on_close(conn: &Connect, sink: CloseSink) -> Result<(), Error> {
    let opaque = Box::into_raw(Box::new(sink)) as *mut c_void;
    // SAFETY: libvirt calls `closed` with `opaque` until unregistration, then
    // `free_close_sink`, which reclaims the box.
    let rc = unsafe {
        sys::virConnectRegisterCloseCallback(
            conn.as_ptr(),
            Some(closed),
            opaque,
            Some(free_close_sink),
        )
    };
    if rc < 0 {
        // SAFETY: libvirt did not take the box: reclaim it.
        drop(unsafe { Box::from_raw(opaque as *mut CloseSink) });
        return Err(Error::last_error());
    }
    Ok(())
}

unsafe extern "C" fn closed(_conn: sys::virConnectPtr, reason: c_int, opaque: *mut c_void) {
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: `opaque` is the box registered in on_close, alive until freed.
        let sink = unsafe { &*(opaque as *const CloseSink) };
        sink(reason);
    });
}

unsafe extern "C" fn free_close_sink(opaque: *mut c_void) {
    if !opaque.is_null() {
        // SAFETY: the pointer came from Box::into_raw in on_close.
        drop(unsafe { Box::from_raw(opaque as *mut CloseSink) });
    }
}

// ---------------------------------------------------------------------------
// Jobs (migration progress and abort)

/// `virDomainGetJobStats`: the job type (`VIR_DOMAIN_JOB_*`) and its typed
/// parameters. `virt`'s own wrapper hands libvirt's array to Rust's allocator.
pub fn job_stats(
    domain: &virt::domain::Domain,
    flags: u32,
) -> Result<(i32, Vec<(String, ParamValue)>), Error> {
    let mut kind: c_int = 0;
    let mut params: sys::virTypedParameterPtr = ptr::null_mut();
    let mut nparams: c_int = 0;
    // SAFETY: the domain pointer is valid while `domain` lives; libvirt allocates
    // `params` (nparams entries), which we copy and free with virTypedParamsFree.
    let rc = unsafe {
        sys::virDomainGetJobStats(domain.as_ptr(), &mut kind, &mut params, &mut nparams, flags)
    };
    if rc < 0 {
        return Err(Error::last_error());
    }
    let count = usize::try_from(nparams).unwrap_or(0);
    let copied = if params.is_null() || count == 0 {
        Vec::new()
    } else {
        // SAFETY: libvirt wrote `nparams` consecutive parameters at `params`.
        let slice = unsafe { std::slice::from_raw_parts(params, count) };
        slice.iter().filter_map(copy_param).collect()
    };
    if !params.is_null() {
        // SAFETY: frees the array and its strings, allocated by libvirt above.
        unsafe { sys::virTypedParamsFree(params, nparams) };
    }
    Ok((kind, copied))
}

/// `virDomainAbortJob`: cancels the domain's running job (an outgoing migration).
pub fn abort_job(domain: &virt::domain::Domain) -> Result<(), Error> {
    // SAFETY: the domain pointer is valid while `domain` lives.
    if unsafe { sys::virDomainAbortJob(domain.as_ptr()) } < 0 {
        return Err(Error::last_error());
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Block jobs (merging a disk overlay back: see snapshot.rs)

/// `virDomainBlockCommit` of the active layer of `disk` (a target or a source
/// path) into its backing file; the job then mirrors writes until pivoted.
pub fn block_commit_active(domain: &virt::domain::Domain, disk: &str) -> Result<(), Error> {
    let disk = std::ffi::CString::new(disk)?;
    // SAFETY: the domain pointer is valid while `domain` lives; `disk` outlives
    // the call; NULL base and top mean "the backing file" and "the active layer".
    let rc = unsafe {
        sys::virDomainBlockCommit(
            domain.as_ptr(),
            disk.as_ptr(),
            ptr::null(),
            ptr::null(),
            0,
            sys::VIR_DOMAIN_BLOCK_COMMIT_ACTIVE,
        )
    };
    if rc < 0 {
        return Err(Error::last_error());
    }
    Ok(())
}

/// `virDomainGetBlockJobInfo`: (cur, end) of the disk's block job, None if it has none.
pub fn block_job_cursor(
    domain: &virt::domain::Domain,
    disk: &str,
) -> Result<Option<(u64, u64)>, Error> {
    let disk = std::ffi::CString::new(disk)?;
    let mut info = sys::virDomainBlockJobInfo {
        type_: 0,
        bandwidth: 0,
        cur: 0,
        end: 0,
    };
    // SAFETY: valid domain pointer, C string and a struct libvirt fills in.
    let rc = unsafe { sys::virDomainGetBlockJobInfo(domain.as_ptr(), disk.as_ptr(), &mut info, 0) };
    match rc {
        rc if rc < 0 => Err(Error::last_error()),
        0 => Ok(None),
        _ => Ok(Some((info.cur, info.end))),
    }
}

/// `virDomainBlockJobAbort`: with `pivot`, switches the disk to the job's
/// target (a finished active commit: the backing file) and waits for it;
/// without, cancels the job and the disk stays where it was.
pub fn block_job_end(domain: &virt::domain::Domain, disk: &str, pivot: bool) -> Result<(), Error> {
    let disk = std::ffi::CString::new(disk)?;
    let flags = if pivot {
        sys::VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT
    } else {
        0
    };
    // SAFETY: valid domain pointer and C string; synchronous (no ASYNC flag).
    if unsafe { sys::virDomainBlockJobAbort(domain.as_ptr(), disk.as_ptr(), flags) } < 0 {
        return Err(Error::last_error());
    }
    Ok(())
}

/// What one non-blocking read of a libvirt stream got.
pub enum StreamRead {
    Data(usize),
    /// Nothing yet (the stream is non-blocking).
    Empty,
    /// The other end closed it (the guest's console went away).
    End,
}

/// `virStreamRecv` on a non-blocking stream: virt's `recv` turns "nothing
/// yet" (-2) into an error, which a console must tell from a real one.
pub fn stream_recv(stream: &virt::stream::Stream, buf: &mut [u8]) -> Result<StreamRead, Error> {
    // SAFETY: the stream is alive (borrowed); the buffer is valid for its length.
    let n = unsafe { sys::virStreamRecv(stream.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    match n {
        -2 => Ok(StreamRead::Empty),
        0 => Ok(StreamRead::End),
        n if n > 0 => Ok(StreamRead::Data(n as usize)),
        _ => Err(Error::last_error()),
    }
}

/// `virStreamSend` on a non-blocking stream: `None` when it would block.
pub fn stream_send(stream: &virt::stream::Stream, bytes: &[u8]) -> Result<Option<usize>, Error> {
    // SAFETY: the stream is alive (borrowed); libvirt only reads the buffer.
    let n = unsafe {
        sys::virStreamSend(
            stream.as_ptr(),
            bytes.as_ptr().cast_mut().cast(),
            bytes.len(),
        )
    };
    match n {
        -2 => Ok(None),
        n if n >= 0 => Ok(Some(n as usize)),
        _ => Err(Error::last_error()),
    }
}

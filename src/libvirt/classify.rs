//! libvirt's errors in lab's words, decided by libvirt's error code, the code's origin (error domain) and, for
//! system errors, errno; never by the message text, which libvirt words differently across versions and locales.

use super::{Error, ErrorKind};
use std::io;
use virt::enumutil::Enum;
use virt::error::{ErrorDomain, ErrorNumber};
use virt::sys;

/// The libvirt call that failed, where one code means different things for different calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Call {
    /// Opening the connection (`virConnectOpen`): a system error from the RPC layer means libvirtd's socket (or
    /// the ssh tunnel to it) could not be used.
    Connect,
    /// `virDomainDefineXML`, `virNetworkDefineXML`, `virStoragePoolDefineXML`: libvirt's object lists report a
    /// name or UUID that is taken, and a pool folder another pool uses, as `VIR_ERR_OPERATION_FAILED`
    /// (`virDomainObjListAdd`, `virNetworkObjAssignDef`, `virStoragePoolObjListAdd`); verified on libvirt 9.0's
    /// qemu, network, storage and test drivers.
    Define,
    /// `virStorageVolCreateXML`: the storage driver reports a taken name as `VIR_ERR_STORAGE_VOL_EXIST`, the test
    /// driver as `VIR_ERR_OPERATION_FAILED` from the test domain (libvirt 9.0).
    CreateVolume,
    /// Any other call.
    Other,
}

/// What a failed call means for lab. Pure, so every case is testable without libvirt.
pub(crate) fn classify(
    call: Call,
    code: Option<ErrorNumber>,
    domain: Option<ErrorDomain>,
    errno: Option<i32>,
) -> ErrorKind {
    use ErrorNumber as N;
    let io_kind = errno.map(|n| io::Error::from_raw_os_error(n).kind());
    let rpc = matches!(domain, Some(ErrorDomain::Rpc | ErrorDomain::Remote));
    match code {
        Some(N::NoDomain | N::NoNetwork | N::NoStoragePool | N::NoStorageVolume) => {
            ErrorKind::NotFound
        }
        Some(N::AuthFailed | N::AuthCancelled | N::AuthUnavailable | N::AccessDenied) => {
            ErrorKind::PermissionDenied
        }
        Some(N::NoConnect) => ErrorKind::Unreachable,
        // Opening qemu:///system as a user who is not in the libvirt group asks polkit, over the system D-Bus; with
        // no polkit agent or no system bus that fails in those domains: the user may not use this connection.
        _ if call == Call::Connect
            && matches!(
                domain,
                Some(ErrorDomain::Polkit | ErrorDomain::Dbus | ErrorDomain::Auth)
            ) =>
        {
            ErrorKind::PermissionDenied
        }
        Some(N::SystemError)
            if matches!(
                io_kind,
                Some(io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded)
            ) =>
        {
            ErrorKind::NoSpace
        }
        // libvirtd's socket: EACCES/EPERM when its permissions keep the user out; ENOENT (no socket: libvirtd is
        // not running), ECONNREFUSED, ETIMEDOUT, EHOSTUNREACH or a tunnel that closed otherwise.
        Some(N::SystemError) if rpc && call == Call::Connect => match io_kind {
            Some(io::ErrorKind::PermissionDenied) => ErrorKind::PermissionDenied,
            _ => ErrorKind::Unreachable,
        },
        // The connection went away after it was made (libvirtd stopped, the ssh tunnel died).
        Some(N::SystemError)
            if rpc
                && matches!(
                    io_kind,
                    Some(
                        io::ErrorKind::ConnectionReset
                            | io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::BrokenPipe
                            | io::ErrorKind::NotConnected
                            | io::ErrorKind::ConnectionRefused
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::HostUnreachable
                            | io::ErrorKind::NetworkUnreachable
                    )
                ) =>
        {
            ErrorKind::Unreachable
        }
        Some(
            N::DomExist
            | N::NetworkExist
            | N::StorageVolExist
            | N::StoragePoolBuilt
            | N::NetworkPortExists,
        ) => ErrorKind::Exists,
        Some(N::OperationFailed) if call == Call::Define => ErrorKind::Exists,
        Some(N::OperationFailed)
            if call == Call::CreateVolume && domain == Some(ErrorDomain::Test) =>
        {
            ErrorKind::Exists
        }
        Some(N::AgentUnresponsive) => ErrorKind::AgentUnavailable,
        _ => ErrorKind::Other,
    }
}

/// The errno libvirt attached to the error it reported last on this thread (`int1` of a `VIR_ERR_SYSTEM_ERROR`),
/// if that error is `e`.
///
/// virt's `Error` does not carry `int1`. libvirt keeps the last error per thread until the next libvirt call on that
/// thread resets it (every public API does, `vir*Free` too), so this must run right after the failing call, before
/// any other libvirt call or drop of a libvirt object on this thread. The code and domain are compared with `e` so
/// that a stale or reset error is never taken for it.
pub(crate) fn last_errno(e: &virt::error::Error) -> Option<i32> {
    // SAFETY: virGetLastError returns NULL or a pointer to this thread's error object, owned by libvirt and valid
    // until the next libvirt call on this thread; none happens while it is read, and only integers are copied.
    let (code, domain, int1) = unsafe {
        let p = sys::virGetLastError();
        if p.is_null() {
            return None;
        }
        ((*p).code, (*p).domain, (*p).int1)
    };
    let same = i64::from(code) == i64::from(e.code().to_raw())
        && i64::from(domain) == i64::from(e.domain().to_raw());
    (same && code == sys::VIR_ERR_SYSTEM_ERROR as i32 && int1 > 0).then_some(int1)
}

fn known<E, I>(v: Enum<E, I>) -> Option<E> {
    match v {
        Enum::Known(k) => Some(k),
        Enum::Unknown(_) => None,
    }
}

/// lab's error for a failed libvirt call; `errno` from [`last_errno`], read right after the call.
pub(crate) fn error(
    call: Call,
    op: &'static str,
    object: &str,
    e: &virt::error::Error,
    errno: Option<i32>,
) -> Error {
    Error {
        kind: classify(call, known(e.code()), known(e.domain()), errno),
        op,
        object: object.to_string(),
        message: e.message().trim().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polkit_and_dbus_while_connecting_mean_no_access() {
        for d in [ErrorDomain::Polkit, ErrorDomain::Dbus] {
            assert_eq!(
                classify(
                    Call::Connect,
                    Some(ErrorNumber::InternalError),
                    Some(d),
                    None
                ),
                ErrorKind::PermissionDenied
            );
            assert_eq!(
                classify(Call::Other, Some(ErrorNumber::InternalError), Some(d), None),
                ErrorKind::Other
            );
        }
    }
    use ErrorDomain as D;
    use ErrorNumber as N;

    // Linux errno values.
    const EPERM: i32 = 1;
    const ENOENT: i32 = 2;
    const EIO: i32 = 5;
    const EACCES: i32 = 13;
    const ENOSPC: i32 = 28;
    const EPIPE: i32 = 32;
    const ECONNRESET: i32 = 104;
    const ETIMEDOUT: i32 = 110;
    const ECONNREFUSED: i32 = 111;
    const EHOSTUNREACH: i32 = 113;
    const EDQUOT: i32 = 122;

    fn c(call: Call, code: N, domain: D, errno: Option<i32>) -> ErrorKind {
        classify(call, Some(code), Some(domain), errno)
    }

    #[test]
    fn socket_errors_while_connecting() {
        // "Failed to connect socket to '/run/libvirt/libvirt-sock': Permission denied", and so on: measured on
        // libvirt 9.0 (code SystemError, domain Rpc, errno in int1).
        for e in [EACCES, EPERM] {
            assert_eq!(
                c(Call::Connect, N::SystemError, D::Rpc, Some(e)),
                ErrorKind::PermissionDenied
            );
        }
        for e in [
            ENOENT,
            ECONNREFUSED,
            ETIMEDOUT,
            EHOSTUNREACH,
            ECONNRESET,
            EIO,
        ] {
            assert_eq!(
                c(Call::Connect, N::SystemError, D::Rpc, Some(e)),
                ErrorKind::Unreachable,
                "errno {e}"
            );
            assert_eq!(
                c(Call::Connect, N::SystemError, D::Remote, Some(e)),
                ErrorKind::Unreachable
            );
        }
        assert_eq!(
            c(Call::Connect, N::NoConnect, D::None, None),
            ErrorKind::Unreachable
        );
        for code in [
            N::AuthFailed,
            N::AuthCancelled,
            N::AuthUnavailable,
            N::AccessDenied,
        ] {
            assert_eq!(
                c(Call::Connect, code, D::Remote, None),
                ErrorKind::PermissionDenied
            );
        }
    }

    #[test]
    fn system_errors_elsewhere() {
        // A file the daemon may not open is no reason to join the libvirt group.
        assert_eq!(
            c(Call::Other, N::SystemError, D::Storage, Some(EACCES)),
            ErrorKind::Other
        );
        assert_eq!(
            c(Call::Other, N::SystemError, D::Rpc, Some(EACCES)),
            ErrorKind::Other
        );
        // A lost connection.
        for e in [ECONNRESET, EPIPE] {
            assert_eq!(
                c(Call::Other, N::SystemError, D::Rpc, Some(e)),
                ErrorKind::Unreachable
            );
        }
        assert_eq!(
            c(Call::Other, N::SystemError, D::Storage, Some(ECONNRESET)),
            ErrorKind::Other
        );
        // A full disk, wherever it is reported (upload streams, pool builds), also while connecting.
        for (call, d) in [
            (Call::Other, D::Streams),
            (Call::Other, D::Storage),
            (Call::CreateVolume, D::Storage),
            (Call::Connect, D::Rpc),
        ] {
            assert_eq!(c(call, N::SystemError, d, Some(ENOSPC)), ErrorKind::NoSpace);
            assert_eq!(c(call, N::SystemError, d, Some(EDQUOT)), ErrorKind::NoSpace);
        }
        assert_eq!(
            c(Call::Other, N::SystemError, D::Storage, None),
            ErrorKind::Other
        );
    }

    #[test]
    fn missing_and_existing_objects() {
        for (code, d) in [
            (N::NoDomain, D::Qemu),
            (N::NoDomain, D::Test),
            (N::NoNetwork, D::Network),
            (N::NoStoragePool, D::Storage),
            (N::NoStorageVolume, D::Storage),
        ] {
            assert_eq!(c(Call::Other, code, d, None), ErrorKind::NotFound);
        }
        for code in [
            N::DomExist,
            N::NetworkExist,
            N::StorageVolExist,
            N::StoragePoolBuilt,
        ] {
            assert_eq!(c(Call::Other, code, D::Storage, None), ErrorKind::Exists);
        }
        for d in [D::Domain, D::Network, D::Storage] {
            assert_eq!(
                c(Call::Define, N::OperationFailed, d, None),
                ErrorKind::Exists
            );
            assert_eq!(
                c(Call::Other, N::OperationFailed, d, None),
                ErrorKind::Other
            );
        }
        assert_eq!(
            c(Call::CreateVolume, N::OperationFailed, D::Test, None),
            ErrorKind::Exists
        );
        assert_eq!(
            c(Call::CreateVolume, N::OperationFailed, D::Storage, None),
            ErrorKind::Other
        );
    }

    #[test]
    fn everything_else() {
        assert_eq!(
            c(Call::Other, N::AgentUnresponsive, D::Qemu, None),
            ErrorKind::AgentUnavailable
        );
        // "pool has asynchronous jobs running" is an internal error like many others: nothing to retry on.
        assert_eq!(
            c(Call::Other, N::InternalError, D::Storage, None),
            ErrorKind::Other
        );
        assert_eq!(
            c(Call::Other, N::InvalidArg, D::Test, None),
            ErrorKind::Other
        );
        assert_eq!(classify(Call::Connect, None, None, None), ErrorKind::Other);
    }
}

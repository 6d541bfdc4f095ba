//! Host name resolution for the HTTP client: the system resolver, as reqwest's default, but a failure is a typed
//! [`Unresolved`] that a download error can be classified by (found in the error's source chain, not in its
//! text). Names under `.invalid` (RFC 6761, reserved never to resolve) are answered as unknown without asking
//! any resolver.

use std::net::SocketAddr;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// A host name that did not resolve.
#[derive(Debug, thiserror::Error)]
#[error("cannot resolve {host}")]
pub struct Unresolved {
    /// The name looked up.
    pub host: String,
    /// The resolver's error (none for `.invalid` names or an empty answer).
    #[source]
    pub source: Option<std::io::Error>,
}

/// The resolver given to the HTTP client.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let unresolved = |source| Unresolved {
                host: host.clone(),
                source,
            };
            if is_reserved_invalid(&host) {
                return Err(unresolved(None).into());
            }
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| unresolved(Some(e)))?
                .collect();
            if addrs.is_empty() {
                return Err(unresolved(None).into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// Whether `host` is `invalid` or a name under it.
fn is_reserved_invalid(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "invalid" || host.ends_with(".invalid")
}

/// The name that did not resolve, if `e` or one of its sources is an [`Unresolved`].
pub fn unresolved_host<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a str> {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if let Some(u) = c.downcast_ref::<Unresolved>() {
            return Some(&u.host);
        }
        cur = c.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A wrapper as an HTTP client puts around the resolver's error.
    #[derive(Debug, thiserror::Error)]
    #[error("client error (Connect)")]
    struct Wrapper(#[source] Box<dyn std::error::Error + Send + Sync>);

    #[test]
    fn reserved_names() {
        assert!(is_reserved_invalid("nosuch.invalid"));
        assert!(is_reserved_invalid("A.INVALID."));
        assert!(!is_reserved_invalid("invalid.example.com"));
        assert!(!is_reserved_invalid("github.com"));
    }

    #[tokio::test]
    async fn invalid_names_fail_without_a_lookup() {
        let name: Name = "nosuch.invalid".parse().unwrap();
        let Err(e) = SystemResolver.resolve(name).await else {
            panic!("resolved")
        };
        assert_eq!(e.to_string(), "cannot resolve nosuch.invalid");
        let wrapped = Wrapper(e);
        assert_eq!(unresolved_host(&wrapped), Some("nosuch.invalid"));
        let other = Wrapper(Box::new(std::io::Error::other("refused")));
        assert_eq!(unresolved_host(&other), None);
    }
}

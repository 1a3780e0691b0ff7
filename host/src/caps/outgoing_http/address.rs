//! Which addresses an outgoing request may reach once its host name is allowed.
//!
//! A name on a link's allow-list may resolve anywhere: to 127.0.0.1, to the cloud's metadata
//! service at 169.254.169.254, to the gateway's LAN. So the allow-list is applied to the
//! resolved address too: public addresses pass; loopback, private, link-local (metadata
//! included), shared (CGNAT), unspecified, multicast and reserved ones are refused unless the
//! link lists that address explicitly (`allowed_hosts: 127.0.0.1:8080`); `*` never reaches them.
//! The connection then goes to the address that was checked, never to a second lookup of the
//! name ([`super::send`]), so a DNS answer that changes between check and connect (rebinding)
//! cannot slip through.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// What kind of address an IP is, for the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressKind {
    /// Routable on the internet.
    Public,
    /// This machine (127.0.0.0/8, ::1).
    Loopback,
    /// A private network (10/8, 172.16/12, 192.168/16, fc00::/7, fec0::/10, 64:ff9b:1::/48).
    Private,
    /// Link-local (169.254/16, fe80::/10): cloud metadata services live here.
    LinkLocal,
    /// Carrier-grade NAT's shared space (100.64/10).
    Shared,
    /// 0.0.0.0, ::, which connect to this machine.
    Unspecified,
    /// Multicast, broadcast, documentation, benchmarking and other reserved ranges.
    Reserved,
}

impl AddressKind {
    /// How the kind reads in a refusal.
    pub fn describe(self) -> &'static str {
        match self {
            AddressKind::Public => "a public address",
            AddressKind::Loopback => "a loopback address (this machine)",
            AddressKind::Private => "a private-network address",
            AddressKind::LinkLocal => "a link-local address (cloud metadata lives there)",
            AddressKind::Shared => "a carrier-grade NAT address",
            AddressKind::Unspecified => "an unspecified address (this machine)",
            AddressKind::Reserved => "a reserved address",
        }
    }
}

/// The kind of `ip`; IPv4 addresses carried in IPv6 (mapped, translated, compatible, NAT64,
/// 6to4) count as the IPv4 address they carry, since that is where the packets end up.
pub fn kind(ip: IpAddr) -> AddressKind {
    match ip {
        IpAddr::V4(v4) => kind_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => kind_v4(v4),
            None => kind_v6(v6),
        },
    }
}

fn kind_v4(ip: Ipv4Addr) -> AddressKind {
    let [a, b, c, _] = ip.octets();
    if ip.is_unspecified() {
        AddressKind::Unspecified
    } else if ip.is_loopback() {
        AddressKind::Loopback
    } else if ip.is_private() {
        AddressKind::Private
    } else if ip.is_link_local() {
        AddressKind::LinkLocal
    } else if a == 100 && (64..128).contains(&b) {
        AddressKind::Shared
    } else if a == 0
        || a >= 224
        || (a == 192 && b == 0 && c == 0)
        || (a == 192 && b == 0 && c == 2)
        || (a == 192 && b == 88 && c == 99)
        || (a == 198 && (18..20).contains(&b))
        || (a == 198 && b == 51 && c == 100)
        || (a == 203 && b == 0 && c == 113)
    {
        AddressKind::Reserved
    } else {
        AddressKind::Public
    }
}

fn kind_v6(ip: Ipv6Addr) -> AddressKind {
    let [first, second, third, fourth, ..] = ip.segments();
    if ip.is_unspecified() {
        AddressKind::Unspecified
    } else if ip.is_loopback() {
        AddressKind::Loopback
    } else if first & 0xfe00 == 0xfc00
        || first & 0xffc0 == 0xfec0
        || (first == 0x64 && second == 0xff9b && third == 1)
    {
        // Unique local, the deprecated site-local, and local-use NAT64 (whose IPv4 position
        // depends on the local prefix length, so it counts as private as a whole).
        AddressKind::Private
    } else if first & 0xffc0 == 0xfe80 {
        AddressKind::LinkLocal
    } else if first & 0xff00 == 0xff00
        || (first == 0x2001 && second == 0x0db8)
        || (first == 0x2001 && second < 0x0200)
        || (first == 0x0100 && second == 0 && third == 0 && fourth == 0)
    {
        // Multicast, documentation, the IETF protocol block (Teredo, which hides an IPv4
        // address, benchmarking, ORCHID) and the discard-only prefix.
        AddressKind::Reserved
    } else {
        AddressKind::Public
    }
}

/// The IPv4 address inside an IPv4-mapped (`::ffff:a.b.c.d`), IPv4-translated
/// (`::ffff:0:a.b.c.d`), IPv4-compatible (`::a.b.c.d`), NAT64 (`64:ff9b::a.b.c.d`) or 6to4
/// (`2002:AABB:CCDD::`) address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    match s {
        [0, 0, 0, 0, 0, 0xffff, hi, lo] | [0, 0, 0, 0, 0xffff, 0, hi, lo] => Some(v4(hi, lo)),
        [0, 0, 0, 0, 0, 0, hi, lo] if !ip.is_loopback() && !ip.is_unspecified() => Some(v4(hi, lo)),
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(v4(hi, lo)),
        [0x2002, hi, lo, ..] => Some(v4(hi, lo)),
        _ => None,
    }
}

/// An address a link lists explicitly, with its port when it names one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExplicitAddress {
    /// The address (canonical: an IPv4-mapped IPv6 address is its IPv4 address).
    pub ip: IpAddr,
    /// Its port, if the entry names one.
    pub port: Option<u16>,
}

impl ExplicitAddress {
    /// Reads an allow-list entry that is an address (`10.0.0.5`, `10.0.0.5:8080`, `[::1]:80`,
    /// `[::1]`, `::1`); a host name is not one.
    pub fn parse(entry: &str) -> Option<Self> {
        let bare = entry
            .strip_prefix('[')
            .and_then(|e| e.strip_suffix(']'))
            .unwrap_or(entry);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Some(Self {
                ip: ip.to_canonical(),
                port: None,
            });
        }
        entry.parse::<SocketAddr>().ok().map(|sa| Self {
            ip: sa.ip().to_canonical(),
            port: Some(sa.port()),
        })
    }
}

/// Why a resolved address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{host} resolves to {}, {}; list it on the link as an address (allowed_hosts: {}) if the \
     workload may reach it",
    addr.ip(),
    kind.describe(),
    addr
)]
pub struct AddressDenied {
    /// The name asked for.
    pub host: String,
    /// The address and port it resolved to.
    pub addr: SocketAddr,
    /// Why the address is not public.
    pub kind: AddressKind,
}

/// Whether a request for `host` may connect to `addr`: a public address, or one `explicit`
/// lists (with this port, when the entry names one).
pub fn check(
    host: &str,
    addr: SocketAddr,
    explicit: &[ExplicitAddress],
) -> Result<(), AddressDenied> {
    let ip = addr.ip().to_canonical();
    let kind = kind(ip);
    let listed = explicit
        .iter()
        .any(|e| e.ip == ip && e.port.is_none_or(|p| p == addr.port()));
    if kind == AddressKind::Public || listed {
        Ok(())
    } else {
        Err(AddressDenied {
            host: host.to_string(),
            addr,
            kind,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().expect("a socket address")
    }

    #[test]
    fn kinds_of_addresses() {
        for (addr, expected) in [
            ("8.8.8.8", AddressKind::Public),
            ("127.0.0.1", AddressKind::Loopback),
            ("127.1.2.3", AddressKind::Loopback),
            ("10.1.2.3", AddressKind::Private),
            ("172.16.0.1", AddressKind::Private),
            ("172.32.0.1", AddressKind::Public),
            ("192.168.1.1", AddressKind::Private),
            ("169.254.169.254", AddressKind::LinkLocal),
            ("100.64.0.1", AddressKind::Shared),
            ("100.128.0.1", AddressKind::Public),
            ("0.0.0.0", AddressKind::Unspecified),
            ("0.1.2.3", AddressKind::Reserved),
            ("224.0.0.1", AddressKind::Reserved),
            ("240.0.0.1", AddressKind::Reserved),
            ("255.255.255.255", AddressKind::Reserved),
            ("192.0.2.1", AddressKind::Reserved),
            ("198.18.0.1", AddressKind::Reserved),
            ("::1", AddressKind::Loopback),
            ("::", AddressKind::Unspecified),
            ("fd00:ec2::254", AddressKind::Private),
            ("fec0::1", AddressKind::Private),
            ("fe80::1", AddressKind::LinkLocal),
            ("ff02::1", AddressKind::Reserved),
            ("2001:db8::1", AddressKind::Reserved),
            ("2001:0:4136:e378::1", AddressKind::Reserved),
            ("100::1", AddressKind::Reserved),
            ("::ffff:127.0.0.1", AddressKind::Loopback),
            ("::ffff:169.254.169.254", AddressKind::LinkLocal),
            ("::ffff:0:10.0.0.1", AddressKind::Private),
            ("::127.0.0.1", AddressKind::Loopback),
            ("64:ff9b::10.0.0.1", AddressKind::Private),
            ("64:ff9b::8.8.8.8", AddressKind::Public),
            ("64:ff9b:1::1", AddressKind::Private),
            ("2002:7f00:1::", AddressKind::Loopback),
            ("2002:a9fe:a9fe::1", AddressKind::LinkLocal),
            ("2002:808:808::", AddressKind::Public),
            ("2606:4700::1111", AddressKind::Public),
        ] {
            assert_eq!(kind(ip(addr)), expected, "{addr}");
        }
    }

    #[test]
    fn only_public_or_explicitly_listed_addresses_pass() {
        let listed = [
            ExplicitAddress::parse("127.0.0.1:8080").expect("an address"),
            ExplicitAddress::parse("10.0.0.5").expect("an address"),
        ];
        assert!(check("example.com", sa("93.184.216.34:443"), &[]).is_ok());
        assert!(check("evil.example", sa("127.0.0.1:80"), &listed).is_err());
        assert!(check("local", sa("127.0.0.1:8080"), &listed).is_ok());
        // The same address written as IPv4-mapped IPv6 is the listed one.
        assert!(check("local", sa("[::ffff:127.0.0.1]:8080"), &listed).is_ok());
        assert!(check("nas", sa("10.0.0.5:445"), &listed).is_ok());
        let denied = check("meta", sa("169.254.169.254:80"), &listed).expect_err("refused");
        assert_eq!(denied.kind, AddressKind::LinkLocal);
        assert!(
            denied
                .to_string()
                .contains("allowed_hosts: 169.254.169.254:80"),
            "{denied}"
        );
        let denied = check("six", sa("[::1]:80"), &listed).expect_err("refused");
        assert!(
            denied.to_string().contains("allowed_hosts: [::1]:80"),
            "{denied}"
        );
    }

    #[test]
    fn explicit_addresses_from_allow_list_entries() {
        assert_eq!(ExplicitAddress::parse("example.com"), None);
        assert_eq!(ExplicitAddress::parse("example.com:80"), None);
        assert_eq!(ExplicitAddress::parse("*"), None);
        for (entry, addr, port) in [
            ("[::1]:80", "::1", Some(80)),
            ("[::1]", "::1", None),
            ("::1", "::1", None),
            ("10.0.0.5", "10.0.0.5", None),
            ("10.0.0.5:8080", "10.0.0.5", Some(8080)),
            ("::ffff:10.0.0.5", "10.0.0.5", None),
        ] {
            assert_eq!(
                ExplicitAddress::parse(entry),
                Some(ExplicitAddress { ip: ip(addr), port }),
                "{entry}"
            );
        }
    }
}

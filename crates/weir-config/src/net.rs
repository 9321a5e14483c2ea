//! Which addresses a delivery endpoint created through the admin API may reach
//! (`events.allowed_networks`): `public` (every address outside loopback, private,
//! link-local, shared, multicast and reserved ranges) and CIDR blocks. Keeps the gateway
//! from being steered at its own network (SSRF).

use std::net::IpAddr;

/// A compiled `allowed_networks` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkPolicy {
    public: bool,
    blocks: Vec<(IpAddr, u8)>,
}

impl NetworkPolicy {
    /// Parses entries: `public` or `ADDRESS/PREFIX` (or a bare address).
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        let mut p = Self {
            public: false,
            blocks: Vec::new(),
        };
        for e in entries {
            if e == "public" {
                p.public = true;
                continue;
            }
            let (addr, len) = match e.split_once('/') {
                Some((a, l)) => (a, Some(l)),
                None => (e.as_str(), None),
            };
            let ip: IpAddr = addr
                .parse()
                .map_err(|_| format!("{e:?}: give `public` or a CIDR block like 10.0.0.0/8"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let len = match len {
                None => max,
                Some(l) => l
                    .parse::<u8>()
                    .ok()
                    .filter(|l| *l <= max)
                    .ok_or(format!("{e:?}: the prefix length is 0 to {max}"))?,
            };
            p.blocks.push((ip, len));
        }
        Ok(p)
    }

    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        (self.public && is_public(ip))
            || self.blocks.iter().any(|(net, len)| within(ip, *net, *len))
    }
}

/// IPv4 addresses written as IPv6 (`::ffff:10.0.0.1`) are judged as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn within(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (ip, canonical(net)) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len))
            };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len))
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Outside every range that is not the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || (o[0] == 198 && (o[1] & 0xfe) == 18)
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] == 0x2001 && s[1] == 0xdb8)
                || (s[0] == 0x64 && s[1] == 0xff9b))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn public_excludes_internal_ranges() {
        let p = NetworkPolicy::parse(&["public".to_owned()]).unwrap();
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "224.0.0.1",
        ] {
            assert!(!p.allows(ip(internal)), "{internal}");
        }
        for public in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert!(p.allows(ip(public)), "{public}");
        }
    }

    #[test]
    fn blocks_add_internal_networks() {
        let p = NetworkPolicy::parse(&["10.0.0.0/8".to_owned(), "fd00::/8".to_owned()]).unwrap();
        assert!(p.allows(ip("10.9.9.9")));
        assert!(p.allows(ip("fd12::1")));
        assert!(!p.allows(ip("11.0.0.1")), "no `public`: only the blocks");
        assert!(!p.allows(ip("192.168.0.1")));
        assert!(NetworkPolicy::parse(&["10.0.0.0/33".to_owned()]).is_err());
        assert!(NetworkPolicy::parse(&["internal".to_owned()]).is_err());
    }
}

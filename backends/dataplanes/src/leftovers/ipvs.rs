//! IPVS leftovers: the virtual services on `kube-ipvs0`'s addresses, then the link. Only those
//! services: upstream's cleanup flushes every IPVS service on the host, which removes what
//! other software made; this one leaves them.

use crate::error::Error;
use crate::target::Target;

/// The dummy link upstream's IPVS mode binds service addresses to.
const LINK: &str = "kube-ipvs0";

pub(super) fn cleanup(target: &Target) -> Result<Vec<String>, Error> {
    let Ok(addresses) = target.run("ip", &["-o", "addr", "show", "dev", LINK]) else {
        // No such link (or it cannot be read): nothing of ours.
        return Ok(Vec::new());
    };
    let addresses: Vec<String> = addresses
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.find(|w| *w == "inet" || *w == "inet6")?;
            words.next()?.split('/').next().map(str::to_owned)
        })
        .collect();
    let mut removed = Vec::new();
    // Without IPVS in the kernel (or without ipvsadm) no virtual service can exist.
    if let Ok(services) = target.run("ipvsadm", &["-S", "-n"]) {
        for service in ours(&services, &addresses) {
            target.run("ipvsadm", &["-D", &service.0, &service.1])?;
            removed.push(format!("ipvs service {} {}", service.0, service.1));
        }
    }
    target.run("ip", &["link", "delete", LINK])?;
    removed.push(format!("link {LINK}"));
    Ok(removed)
}

/// The virtual services (`-t|-u|--sctp-service`, `ADDR:PORT`) of `ipvsadm -S -n` output on
/// one of `addresses`.
fn ours(saved: &str, addresses: &[String]) -> Vec<(String, String)> {
    saved
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["-A", kind, service, ..] => Some(((*kind).to_owned(), (*service).to_owned())),
                _ => None,
            }
        })
        .filter(|(_, service)| {
            let host = service
                .rsplit_once(':')
                .map_or(service.as_str(), |(host, _)| host)
                .trim_start_matches('[')
                .trim_end_matches(']');
            addresses.iter().any(|a| a == host)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_services_on_our_addresses() {
        let saved = "-A -t 10.96.0.1:443 -s rr\n-a -t 10.96.0.1:443 -r 10.0.0.5:6443 -m -w 1\n-A -u 192.168.1.1:53 -s rr\n-A -t [fd00::1]:80 -s rr\n";
        let addresses = vec!["10.96.0.1".to_owned(), "fd00::1".to_owned()];
        assert_eq!(
            ours(saved, &addresses),
            vec![
                ("-t".to_owned(), "10.96.0.1:443".to_owned()),
                ("-t".to_owned(), "[fd00::1]:80".to_owned())
            ]
        );
    }
}

//! SMPP accounts: who may bind, from where, as whom, how often, and how fast.
//!
//! The configured `accounts` text holds one account per line:
//! `system_id:pbkdf2-sha256$<iterations>$<salt hex>$<hash hex>[:attribute=value...]`.
//! The password is stored only as its salted PBKDF2-HMAC-SHA256 (an SMPP password has at
//! most 8 characters, too few for the plain SHA-256 the HTTP API keys use);
//! `smsgw-smpp-server hash-password` prints a line's hash. Attributes:
//! - `account=<id>`: the client id messages are sent for (default: the `system_id`);
//! - `senders=<a>,<b>`: the only source addresses it may use (default: any valid one);
//! - `ips=<cidr>,<cidr>`: the networks it may bind from (default: any);
//! - `max_binds=<n>`: sessions at once (default 4), shared among the replicas;
//! - `rate=<n>`: messages per second (default: the config's `default_rate`), shared
//!   among the replicas.
//!
//! Identity comes from the `system_id` and password only; everything a session does
//! afterwards is checked against its account, never against what a PDU claims.

use hmac::Hmac;
use ipnet::IpNet;
use sha2::Sha256;
use std::collections::HashMap;
use std::net::IpAddr;
use subtle::ConstantTimeEq;

/// Longest `system_id` SMPP 3.4 allows (16 octets with the NUL).
pub const MAX_SYSTEM_ID: usize = 15;
/// Longest password SMPP 3.4 allows (9 octets with the NUL).
pub const MAX_PASSWORD: usize = 8;
/// Fewest PBKDF2 iterations a configured hash may use.
pub const MIN_ITERATIONS: u32 = 10_000;
/// Iterations `hash-password` uses.
pub const DEFAULT_ITERATIONS: u32 = 100_000;

/// One account, as configured.
#[derive(Debug, Clone)]
pub struct Account {
    /// Bind name.
    pub system_id: String,
    /// Client id of its messages.
    pub client_id: String,
    /// Source addresses it may use (`None`: any).
    pub senders: Option<Vec<String>>,
    /// Networks it may bind from (`None`: any).
    pub networks: Option<Vec<IpNet>>,
    /// Sessions at once, fleet-wide.
    pub max_binds: u32,
    /// Messages per second, fleet-wide.
    pub rate: f64,
    /// `data_coding` 1 carries GSM-7.
    pub ia5_is_gsm7: bool,
    /// Numbers and short codes whose inbound messages are its (`None`: none).
    pub numbers: Option<Vec<String>>,
    hash: PasswordHash,
}

/// A stored password: PBKDF2-HMAC-SHA256 with its salt and iteration count.
#[derive(Clone)]
struct PasswordHash {
    iterations: u32,
    salt: Vec<u8>,
    hash: [u8; 32],
}

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PasswordHash(pbkdf2-sha256, {} iterations)",
            self.iterations
        )
    }
}

impl PasswordHash {
    fn parse(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split('$').collect();
        let [scheme, iterations, salt, hash] = parts[..] else {
            return Err("password hash must be pbkdf2-sha256$<iterations>$<salt>$<hash>".into());
        };
        if scheme != "pbkdf2-sha256" {
            return Err(format!("unknown password scheme {scheme:?}"));
        }
        let iterations: u32 = iterations
            .parse()
            .map_err(|_| format!("iterations {iterations:?} is not a number"))?;
        if iterations < MIN_ITERATIONS {
            return Err(format!(
                "{iterations} iterations is too few; at least {MIN_ITERATIONS}"
            ));
        }
        let salt = hex::decode(salt).map_err(|_| "salt is not hex".to_string())?;
        if salt.len() < 8 {
            return Err("salt must be at least 8 bytes".into());
        }
        let hash: [u8; 32] = hex::decode(hash)
            .ok()
            .and_then(|h| h.try_into().ok())
            .ok_or("hash must be 32 bytes of hex")?;
        Ok(PasswordHash {
            iterations,
            salt,
            hash,
        })
    }

    fn derive(password: &str, salt: &[u8], iterations: u32) -> [u8; 32] {
        let mut out = [0u8; 32];
        pbkdf2::pbkdf2::<Hmac<Sha256>>(password.as_bytes(), salt, iterations, &mut out)
            .expect("HMAC takes a key of any length");
        out
    }

    fn matches(&self, password: &str) -> bool {
        let got = Self::derive(password, &self.salt, self.iterations);
        bool::from(got.ct_eq(&self.hash))
    }
}

/// The hash line part for `password` with `salt`: what `hash-password` prints.
pub fn hash_password(password: &str, salt: &[u8], iterations: u32) -> String {
    let h = PasswordHash::derive(password, salt, iterations);
    format!(
        "pbkdf2-sha256${iterations}${}${}",
        hex::encode(salt),
        hex::encode(h)
    )
}

/// Why a bind was refused, as the ESME is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Unknown `system_id` or wrong password: answered alike (`ESME_RINVPASWD`), so a
    /// caller cannot learn which accounts exist.
    Credentials,
    /// The account may not bind from this address (`ESME_RBINDFAIL`).
    Address,
}

/// Every account, by `system_id`.
#[derive(Debug, Clone, Default)]
pub struct Accounts {
    by_id: HashMap<String, Account>,
    /// Whose inbound messages a number's are, by the number without its `+`.
    by_number: HashMap<String, String>,
    /// Checked when the `system_id` is unknown, so both refusals take the same time.
    decoy: Option<PasswordHash>,
}

impl Accounts {
    /// Parses the accounts text; `default_rate` where a line sets no `rate`.
    pub fn parse(text: &str, default_rate: f64) -> Result<Self, String> {
        let mut by_id = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let a = parse_line(line, default_rate)
                .map_err(|e| format!("accounts line {}: {e}", n + 1))?;
            if by_id.insert(a.system_id.clone(), a).is_some() {
                return Err(format!(
                    "accounts line {}: system_id is listed twice",
                    n + 1
                ));
            }
        }
        let mut by_number = HashMap::new();
        for a in by_id.values() {
            let own = a.numbers.iter().chain(a.senders.iter()).flatten();
            for n in own {
                let n = number_key(n);
                match by_number.insert(n.clone(), a.system_id.clone()) {
                    Some(other) if other != a.system_id => {
                        return Err(format!(
                            "accounts: {n} belongs to both {other} and {}",
                            a.system_id
                        ))
                    }
                    _ => {}
                }
            }
        }
        let decoy = by_id.values().next().map(|a: &Account| PasswordHash {
            iterations: a.hash.iterations,
            salt: vec![0; 16],
            hash: [0; 32],
        });
        Ok(Accounts {
            by_id,
            by_number,
            decoy,
        })
    }

    /// Number of accounts.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// The account an inbound message to `to` is for.
    pub fn owner_of_number(&self, to: &str) -> Option<&Account> {
        self.by_number
            .get(&number_key(to))
            .and_then(|id| self.by_id.get(id))
    }

    /// Every account's `system_id`.
    pub fn system_ids(&self) -> impl Iterator<Item = &str> {
        self.by_id.keys().map(String::as_str)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The account a bind from `peer` with these credentials speaks for. Slow on
    /// purpose (PBKDF2): call it off the async threads.
    pub fn authenticate(
        &self,
        system_id: &str,
        password: &str,
        peer: IpAddr,
    ) -> Result<Account, Refusal> {
        let Some(a) = self.by_id.get(system_id) else {
            if let Some(d) = &self.decoy {
                let _ = d.matches(password);
            }
            return Err(Refusal::Credentials);
        };
        if !a.hash.matches(password) {
            return Err(Refusal::Credentials);
        }
        let peer = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(peer),
            v4 => v4,
        };
        if a.networks
            .as_ref()
            .is_some_and(|nets| !nets.iter().any(|n| n.contains(&peer)))
        {
            return Err(Refusal::Address);
        }
        Ok(a.clone())
    }
}

/// How numbers are compared: without a leading `+`, case-insensitively (sender ids).
fn number_key(n: &str) -> String {
    n.trim().trim_start_matches('+').to_ascii_lowercase()
}

fn parse_line(line: &str, default_rate: f64) -> Result<Account, String> {
    let mut fields = line.split(':');
    let system_id = fields.next().unwrap_or_default().trim().to_string();
    // It names the account's receipt topic and consumer group.
    let topic_safe = system_id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if system_id.is_empty() || system_id.len() > MAX_SYSTEM_ID || !topic_safe {
        return Err(format!(
            "system_id must be 1 to {MAX_SYSTEM_ID} letters, digits, '.', '_' or '-'"
        ));
    }
    let hash = PasswordHash::parse(fields.next().ok_or("no password hash")?.trim())?;
    let mut a = Account {
        client_id: system_id.clone(),
        system_id,
        senders: None,
        networks: None,
        max_binds: 4,
        rate: default_rate,
        ia5_is_gsm7: false,
        numbers: None,
        hash,
    };
    for attr in fields {
        let (k, v) = attr
            .split_once('=')
            .ok_or_else(|| format!("attribute {attr:?} is not name=value"))?;
        let list = || -> Vec<String> {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        };
        match k.trim() {
            "account" if !v.trim().is_empty() => a.client_id = v.trim().to_string(),
            "senders" => a.senders = Some(list()),
            "ips" => {
                a.networks = Some(
                    list()
                        .iter()
                        .map(|n| {
                            n.parse::<IpNet>()
                                .or_else(|_| n.parse::<IpAddr>().map(IpNet::from))
                                .map_err(|_| format!("{n:?} is not an address or CIDR range"))
                        })
                        .collect::<Result<_, _>>()?,
                )
            }
            "max_binds" => {
                a.max_binds = v
                    .trim()
                    .parse()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| format!("max_binds {v:?} must be a whole number >= 1"))?
            }
            "rate" => {
                a.rate = v
                    .trim()
                    .parse()
                    .ok()
                    .filter(|r: &f64| r.is_finite() && *r > 0.0)
                    .ok_or_else(|| format!("rate {v:?} must be a number > 0"))?
            }
            "numbers" => a.numbers = Some(list()),
            "ia5" => {
                a.ia5_is_gsm7 = match v.trim() {
                    "gsm7" => true,
                    "ascii" => false,
                    _ => return Err(format!("ia5 {v:?} must be gsm7 or ascii")),
                }
            }
            other => return Err(format!("unknown attribute {other:?}")),
        }
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: &str, pw: &str, attrs: &str) -> String {
        format!(
            "{id}:{}{attrs}",
            hash_password(pw, b"saltsalt", MIN_ITERATIONS)
        )
    }

    fn local() -> IpAddr {
        "127.0.0.1".parse().unwrap()
    }

    #[test]
    fn a_bind_with_the_right_password_gets_its_account() {
        let accts =
            Accounts::parse(&line("shop", "s3cret", ":account=acme:rate=5"), 100.0).unwrap();
        let a = accts.authenticate("shop", "s3cret", local()).unwrap();
        assert_eq!(
            (a.client_id.as_str(), a.rate, a.max_binds),
            ("acme", 5.0, 4)
        );
    }

    #[test]
    fn a_wrong_password_and_an_unknown_system_id_are_refused_alike() {
        let accts = Accounts::parse(&line("shop", "s3cret", ""), 100.0).unwrap();
        assert_eq!(
            accts.authenticate("shop", "guess", local()).unwrap_err(),
            Refusal::Credentials
        );
        assert_eq!(
            accts.authenticate("nobody", "s3cret", local()).unwrap_err(),
            Refusal::Credentials
        );
    }

    #[test]
    fn a_bind_from_outside_the_accounts_networks_is_refused() {
        let accts = Accounts::parse(&line("shop", "pw", ":ips=10.0.0.0/8,192.0.2.7"), 1.0).unwrap();
        assert_eq!(
            accts.authenticate("shop", "pw", local()).unwrap_err(),
            Refusal::Address
        );
        assert!(accts
            .authenticate("shop", "pw", "10.1.2.3".parse().unwrap())
            .is_ok());
        assert!(accts
            .authenticate("shop", "pw", "192.0.2.7".parse().unwrap())
            .is_ok());
        // An IPv4 peer seen on a dual-stack socket.
        assert!(accts
            .authenticate("shop", "pw", "::ffff:10.9.9.9".parse().unwrap())
            .is_ok());
    }

    #[test]
    fn bad_lines_fail_fast_with_their_line_number() {
        for (text, why) in [
            ("shop:sha256hex", "password hash"),
            ("shop:pbkdf2-sha256$10$73616c7473616c74$00", "too few"),
            (&line("a-very-long-system-id", "pw", ""), "system_id"),
            (&line("shop/x", "pw", ""), "system_id"),
            (&line("shop", "pw", ":max_binds=0"), "max_binds"),
            (&line("shop", "pw", ":ips=nonsense"), "CIDR"),
            (&line("shop", "pw", ":colour=red"), "unknown attribute"),
            (
                &format!("{}\n{}", line("a", "x", ""), line("a", "y", "")),
                "twice",
            ),
        ] {
            let e = Accounts::parse(text, 1.0).unwrap_err();
            assert!(e.contains("line") && e.contains(why), "{text}: {e}");
        }
    }

    #[test]
    fn inbound_messages_belong_to_the_account_with_the_number_or_sender() {
        let text = [
            line("shop", "pw", ":numbers=+447700900001,60123:senders=Shop"),
            line("bank", "pw", ":numbers=447700900002"),
        ]
        .join("\n");
        let accts = Accounts::parse(&text, 1.0).unwrap();
        let owner = |n| accts.owner_of_number(n).map(|a| a.system_id.as_str());
        assert_eq!(owner("447700900001"), Some("shop"));
        assert_eq!(owner("60123"), Some("shop"));
        assert_eq!(owner("SHOP"), Some("shop"));
        assert_eq!(owner("+447700900002"), Some("bank"));
        assert_eq!(owner("+447700900003"), None);
        let clash = [
            line("a", "pw", ":numbers=+1555"),
            line("b", "pw", ":numbers=1555"),
        ]
        .join("\n");
        assert!(Accounts::parse(&clash, 1.0).unwrap_err().contains("both"));
    }

    #[test]
    fn the_hash_is_salted_and_never_printed() {
        let a = hash_password("pw", b"saltsalt", MIN_ITERATIONS);
        let b = hash_password("pw", b"pepper!!", MIN_ITERATIONS);
        assert_ne!(a, b);
        let accts = Accounts::parse(&line("shop", "pw", ""), 1.0).unwrap();
        assert!(!format!("{accts:?}").contains(&a[a.rfind('$').unwrap() + 1..]));
    }
}

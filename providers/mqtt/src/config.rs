//! What a link's configuration says: the broker, the quality of service and, for deliveries,
//! the topic filters.

use std::collections::BTreeMap;

use lattice_provider_sdk::ProviderError;
use rumqttc::QoS;

/// The broker when a link names none: the gateway's own.
pub const DEFAULT_URI: &str = "mqtt://127.0.0.1:1883";

/// A broker as a link names it: `mqtt://[user:password@]host[:port]` (or `tcp://`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct BrokerAddr {
    pub host: String,
    pub port: u16,
    pub credentials: Option<(String, String)>,
}

impl BrokerAddr {
    pub fn parse(uri: &str) -> Result<Self, ProviderError> {
        let invalid = |why: &str| ProviderError::Other(format!("MQTT uri `{uri}`: {why}"));
        let rest = uri
            .strip_prefix("mqtt://")
            .or_else(|| uri.strip_prefix("tcp://"))
            .ok_or_else(|| {
                invalid("expected mqtt://host[:port] or tcp://host[:port] (TLS is not supported)")
            })?;
        let rest = rest.trim_end_matches('/');
        if rest.contains(['/', '?', '#']) {
            return Err(invalid("a broker address has no path or query"));
        }
        let (credentials, hostport) = match rest.rsplit_once('@') {
            Some((userinfo, hostport)) => {
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                (Some((user.to_string(), password.to_string())), hostport)
            }
            None => (None, rest),
        };
        // `[::1]:1883`: the port follows the bracket.
        let (host, port) = match hostport.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => {
                let port = port
                    .parse()
                    .map_err(|_| invalid("the port is not a number"))?;
                (host, port)
            }
            _ => (hostport, 1883),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(invalid("no host"));
        }
        Ok(Self {
            host: host.to_string(),
            port,
            credentials,
        })
    }
}

// Written by hand so that a password never reaches a log line.
impl std::fmt::Display for BrokerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "mqtt://{}:{}", self.host, self.port)
    }
}

impl std::fmt::Debug for BrokerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// One end's configuration of a link.
#[derive(Debug, Clone)]
pub struct Settings {
    pub broker: BrokerAddr,
    pub client_id: Option<String>,
    pub qos: QoS,
}

impl Settings {
    pub fn from_config(config: &BTreeMap<String, String>) -> Result<Self, ProviderError> {
        let uri = config
            .get("uri")
            .map(|u| u.trim())
            .filter(|u| !u.is_empty())
            .unwrap_or(DEFAULT_URI);
        let qos = match config.get("qos").map(|q| q.trim()) {
            None | Some("1") => QoS::AtLeastOnce,
            Some("0") => QoS::AtMostOnce,
            Some(other) => {
                return Err(ProviderError::Other(format!(
                    "MQTT qos `{other}`: expected 0 or 1"
                )));
            }
        };
        Ok(Self {
            broker: BrokerAddr::parse(uri)?,
            client_id: config
                .get("client_id")
                .map(|c| c.trim().to_string())
                .filter(|c| !c.is_empty()),
            qos,
        })
    }
}

/// The comma-separated topic filters of `subscriptions`, checked.
pub fn filters(config: &BTreeMap<String, String>) -> Result<Vec<String>, ProviderError> {
    let list = config.get("subscriptions").map_or("", String::as_str);
    let mut filters: Vec<String> = Vec::new();
    for filter in list.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        if !rumqttc::valid_filter(filter) {
            return Err(ProviderError::Other(format!(
                "`{filter}` is not an MQTT topic filter (`+` and `#` stand for whole levels, `#` last)"
            )));
        }
        if !filters.iter().any(|f| f == filter) {
            filters.push(filter.to_string());
        }
    }
    if filters.is_empty() {
        return Err(ProviderError::Other(
            "the link's source config has no `subscriptions` (comma-separated MQTT topic filters)"
                .into(),
        ));
    }
    Ok(filters)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn uris() {
        let a = BrokerAddr::parse("mqtt://127.0.0.1:1883").expect("valid");
        assert_eq!((a.host.as_str(), a.port), ("127.0.0.1", 1883));
        let a = BrokerAddr::parse("tcp://broker.local").expect("valid");
        assert_eq!((a.host.as_str(), a.port), ("broker.local", 1883));
        let a = BrokerAddr::parse("mqtt://user:secret@[::1]:1884/").expect("valid");
        assert_eq!((a.host.as_str(), a.port), ("::1", 1884));
        assert_eq!(a.credentials, Some(("user".into(), "secret".into())));
        assert!(!a.to_string().contains("secret"));
        assert!(BrokerAddr::parse("mqtts://x").is_err());
        assert!(BrokerAddr::parse("mqtt://x:notaport").is_err());
        assert!(BrokerAddr::parse("mqtt://x/path").is_err());
    }

    #[test]
    fn settings_and_filters() {
        let s = Settings::from_config(&config(&[])).expect("defaults");
        assert_eq!(s.broker.to_string(), DEFAULT_URI);
        assert_eq!(s.qos, QoS::AtLeastOnce);
        assert!(Settings::from_config(&config(&[("qos", "2")])).is_err());
        let s = Settings::from_config(&config(&[("qos", "0"), ("client_id", "gw1")])).expect("ok");
        assert_eq!(
            (s.qos, s.client_id.as_deref()),
            (QoS::AtMostOnce, Some("gw1"))
        );

        let f = filters(&config(&[(
            "subscriptions",
            " sensors/+/temp, #,sensors/+/temp,",
        )]));
        assert_eq!(f.expect("valid"), vec!["sensors/+/temp", "#"]);
        assert!(filters(&config(&[("subscriptions", "a/#/b")])).is_err());
        assert!(filters(&config(&[])).is_err());
    }
}

//! The route table: the carriers that serve each destination prefix. Pure.

use crate::config::Route;

/// Routes sorted longest prefix first.
#[derive(Debug, Clone)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    /// Builds the table.
    pub fn new(mut routes: Vec<Route>) -> Self {
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        RouteTable { routes }
    }

    /// Carriers for a destination, in order of preference; empty when no prefix matches.
    pub fn candidates(&self, destination: &str) -> &[String] {
        self.route(destination)
            .map_or(&[], |r| r.carriers.as_slice())
    }

    /// The route (longest matching prefix) of a destination.
    pub fn route(&self, destination: &str) -> Option<&Route> {
        self.routes
            .iter()
            .find(|r| destination.starts_with(&r.prefix))
    }

    /// The prefix that routes a destination (`""` when none does): the key of the
    /// learned statistics.
    pub fn prefix_of(&self, destination: &str) -> &str {
        self.route(destination).map_or("", |r| r.prefix.as_str())
    }

    /// Every carrier named by any route.
    pub fn carriers(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .routes
            .iter()
            .flat_map(|r| r.carriers.iter().cloned())
            .collect();
        all.sort();
        all.dedup();
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable {
        RouteTable::new(vec![
            Route {
                prefix: "+".into(),
                carriers: vec!["world".into()],
            },
            Route {
                prefix: "+44".into(),
                carriers: vec!["a".into(), "b".into()],
            },
            Route {
                prefix: "+447".into(),
                carriers: vec!["m".into(), "a".into()],
            },
        ])
    }

    #[test]
    fn longest_prefix_wins() {
        let t = table();
        assert_eq!(
            t.candidates("+447911123456"),
            ["m".to_string(), "a".to_string()]
        );
        assert_eq!(
            t.candidates("+442071234567"),
            ["a".to_string(), "b".to_string()]
        );
        assert_eq!(t.candidates("+15551234567"), ["world".to_string()]);
    }

    #[test]
    fn no_match_means_no_route() {
        let t = RouteTable::new(vec![Route {
            prefix: "+44".into(),
            carriers: vec!["a".into()],
        }]);
        assert!(t.route("+15551234567").is_none());
        assert_eq!(t.prefix_of("+15551234567"), "");
        assert_eq!(t.prefix_of("+447911123456"), "+44");
    }
}

//! The route table: ordered carriers per destination prefix. Pure.

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
        self.routes
            .iter()
            .find(|r| destination.starts_with(&r.prefix))
            .map(|r| r.carriers.as_slice())
            .unwrap_or(&[])
    }

    /// The next carrier to try: the first untried one that is up, else the first untried
    /// one (its dispatch topic holds the work until it binds), else none.
    pub fn choose(
        &self,
        destination: &str,
        tried: &[String],
        is_up: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let untried: Vec<&String> = self
            .candidates(destination)
            .iter()
            .filter(|c| !tried.contains(c))
            .collect();
        untried
            .iter()
            .find(|c| is_up(c))
            .or(untried.first())
            .map(|c| c.to_string())
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
    fn skips_down_carriers_and_tried_ones() {
        let t = table();
        assert_eq!(
            t.choose("+442071234567", &[], |c| c != "a").as_deref(),
            Some("b")
        );
        assert_eq!(
            t.choose("+442071234567", &["a".into()], |_| true)
                .as_deref(),
            Some("b")
        );
        assert_eq!(
            t.choose("+442071234567", &["a".into(), "b".into()], |_| true),
            None
        );
    }

    #[test]
    fn all_down_still_queues_on_the_first() {
        assert_eq!(
            table().choose("+442071234567", &[], |_| false).as_deref(),
            Some("a")
        );
    }

    #[test]
    fn no_match_means_no_route() {
        let t = RouteTable::new(vec![Route {
            prefix: "+44".into(),
            carriers: vec!["a".into()],
        }]);
        assert_eq!(t.choose("+15551234567", &[], |_| true), None);
    }
}

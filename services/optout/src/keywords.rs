//! Keyword matching: an MO is a keyword only when the whole message is one, ignoring
//! case and any whitespace or punctuation around it ("Stop." is STOP, "don't stop" is
//! not).

use serde::Deserialize;

/// What a keyword asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keyword {
    /// Opt out.
    Stop,
    /// Opt back in.
    Start,
    /// Send the help text.
    Help,
}

impl Keyword {
    /// Label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Keyword::Stop => "stop",
            Keyword::Start => "start",
            Keyword::Help => "help",
        }
    }
}

/// Keyword lists. Unset lists fall back to the next level (sender, account, defaults).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KeywordLists {
    /// Words that opt out.
    #[serde(default)]
    pub stop: Option<Vec<String>>,
    /// Words that opt back in.
    #[serde(default)]
    pub start: Option<Vec<String>>,
    /// Words that ask for help.
    #[serde(default)]
    pub help: Option<Vec<String>>,
}

/// The defaults carriers and CPaaS platforms use.
pub fn default_stop() -> Vec<String> {
    [
        "STOP",
        "STOPALL",
        "UNSUBSCRIBE",
        "CANCEL",
        "END",
        "QUIT",
        "REVOKE",
        "OPTOUT",
        "OPT-OUT",
        "REMOVE",
        "ARRET",
        "TD",
    ]
    .map(String::from)
    .to_vec()
}

/// Default opt-in words.
pub fn default_start() -> Vec<String> {
    ["START", "YES", "UNSTOP"].map(String::from).to_vec()
}

/// Default help words.
pub fn default_help() -> Vec<String> {
    ["HELP", "INFO"].map(String::from).to_vec()
}

/// The message as compared with keywords: whitespace and punctuation trimmed from both
/// ends, upper-cased. Inner characters stay ("OPT-OUT", "don't stop").
pub fn normalize(body: &str) -> String {
    body.trim_matches(|c: char| !c.is_alphanumeric())
        .to_uppercase()
}

/// Resolved lists (normalized), ready to match.
#[derive(Debug, Clone, PartialEq)]
pub struct Keywords {
    stop: Vec<String>,
    start: Vec<String>,
    help: Vec<String>,
}

impl Keywords {
    /// From lists; fails if a word is blank or in two lists.
    pub fn new(stop: &[String], start: &[String], help: &[String]) -> Result<Self, String> {
        let norm = |v: &[String]| v.iter().map(|w| normalize(w)).collect::<Vec<_>>();
        let k = Keywords {
            stop: norm(stop),
            start: norm(start),
            help: norm(help),
        };
        let all: Vec<&String> = k.stop.iter().chain(&k.start).chain(&k.help).collect();
        if k.stop.is_empty() {
            return Err("the stop list cannot be empty".into());
        }
        if all.iter().any(|w| w.is_empty()) {
            return Err("a keyword is blank (or only punctuation)".into());
        }
        for (i, w) in all.iter().enumerate() {
            if all[i + 1..].contains(w) {
                return Err(format!("keyword {w} is listed twice"));
            }
        }
        Ok(k)
    }

    /// What `body` asks for, if it is a keyword.
    pub fn classify(&self, body: &str) -> Option<Keyword> {
        let w = normalize(body);
        if self.stop.contains(&w) {
            Some(Keyword::Stop)
        } else if self.start.contains(&w) {
            Some(Keyword::Start)
        } else if self.help.contains(&w) {
            Some(Keyword::Help)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn defaults() -> Keywords {
        Keywords::new(&default_stop(), &default_start(), &default_help()).unwrap()
    }

    #[test]
    fn the_default_sets() {
        let k = defaults();
        for w in [
            "STOP",
            "stopall",
            "Unsubscribe",
            "cancel",
            "end",
            "quit",
            "revoke",
            "optout",
            "opt-out",
            "remove",
            "arret",
            "td",
        ] {
            assert_eq!(k.classify(w), Some(Keyword::Stop), "{w}");
        }
        for w in ["start", "YES", "unstop"] {
            assert_eq!(k.classify(w), Some(Keyword::Start), "{w}");
        }
        for w in ["help", "Info"] {
            assert_eq!(k.classify(w), Some(Keyword::Help), "{w}");
        }
    }

    #[test]
    fn the_whole_message_must_be_the_keyword() {
        let k = defaults();
        for w in [
            "Stop.", "  stop  ", "STOP!!!", "\"stop\"", "¡Stop!", "\tstop\n", "...quit",
        ] {
            assert_eq!(k.classify(w), Some(Keyword::Stop), "{w:?}");
        }
        for w in [
            "don't stop",
            "stop it",
            "STOPP",
            "please stop",
            "s t o p",
            "stop stop",
            "",
            "!!!",
            "opt out",
        ] {
            assert_eq!(k.classify(w), None, "{w:?}");
        }
    }

    #[test]
    fn bad_lists_are_refused() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(Keywords::new(&s(&[]), &s(&["START"]), &s(&[])).is_err());
        assert!(Keywords::new(&s(&["STOP"]), &s(&["stop."]), &s(&[])).is_err());
        assert!(Keywords::new(&s(&["STOP", "..."]), &s(&[]), &s(&[])).is_err());
        let k = Keywords::new(&s(&["BASTA"]), &s(&["VIA"]), &s(&["AIUTO"])).unwrap();
        assert_eq!(k.classify("basta!"), Some(Keyword::Stop));
        assert_eq!(
            k.classify("STOP"),
            None,
            "custom lists replace the defaults"
        );
    }

    proptest! {
        /// Any keyword wrapped in whitespace and punctuation still matches, in any case.
        #[test]
        fn wrapped_keywords_match(
            i in 0usize..12,
            pre in "[ \\t\\n.,!?\"'()*-]{0,4}",
            post in "[ \\t\\n.,!?\"'()*-]{0,4}",
            lower in any::<bool>(),
        ) {
            let w = &default_stop()[i];
            let w = if lower { w.to_lowercase() } else { w.clone() };
            prop_assert_eq!(defaults().classify(&format!("{pre}{w}{post}")), Some(Keyword::Stop));
        }

        /// A keyword with a word next to it never matches.
        #[test]
        fn keywords_inside_sentences_never_match(i in 0usize..12, word in "[a-z]{1,8}") {
            let w = &default_stop()[i];
            prop_assert_eq!(defaults().classify(&format!("{word} {w}")), None);
            prop_assert_eq!(defaults().classify(&format!("{w} {word}")), None);
        }
    }
}

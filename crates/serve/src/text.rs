//! Turning a growing list of tokens into text deltas: the whole answer is decoded again after
//! every token (so characters split across tokens come out whole), stop strings end the answer
//! before they appear, and text that may still become a stop string, or an incomplete UTF-8
//! character, is held back until the next token decides.

/// The text already sent of one answer, and its stop strings.
#[derive(Debug, Clone, Default)]
pub struct TextStream {
    stops: Vec<String>,
    sent: usize,
}

/// What one update produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta {
    /// New text to send (may be empty).
    pub text: String,
    /// A stop string was found: the answer ends here, without it.
    pub stopped: bool,
}

const REPLACEMENT: char = '\u{FFFD}';

impl TextStream {
    /// A stream that ends at the first of `stops` (empty strings are ignored).
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            sent: 0,
        }
    }

    /// Bytes of the answer sent so far.
    pub fn sent(&self) -> usize {
        self.sent
    }

    /// `text` is the whole answer decoded so far; returns the part not sent yet that is safe to
    /// send now.
    pub fn update(&mut self, text: &str) -> Delta {
        if !self.consistent(text) {
            // An earlier part decoded differently (rare tokenizer clean-ups): wait for more.
            return Delta {
                text: String::new(),
                stopped: false,
            };
        }
        let longest = self.stops.iter().map(String::len).max().unwrap_or(0);
        let mut from = self.sent.saturating_sub(longest);
        while !text.is_char_boundary(from) {
            from -= 1;
        }
        let first_stop = self
            .stops
            .iter()
            .filter_map(|s| text[from..].find(s.as_str()))
            .min();
        if let Some(at) = first_stop {
            let cut = (from + at).max(self.sent);
            let delta = text[self.sent..cut].to_string();
            self.sent = cut;
            return Delta {
                text: delta,
                stopped: true,
            };
        }
        let mut end = text.len();
        while text[..end].ends_with(REPLACEMENT) {
            end -= REPLACEMENT.len_utf8();
        }
        // Hold back the longest tail that a stop string starts with.
        let held = self
            .stops
            .iter()
            .flat_map(|stop| {
                stop.char_indices()
                    .skip(1)
                    .map(|(i, _)| &stop[..i])
                    .filter(|prefix| text[..end].ends_with(prefix))
                    .map(str::len)
                    .collect::<Vec<_>>()
            })
            .max()
            .unwrap_or(0);
        end -= held;
        if end <= self.sent {
            return Delta {
                text: String::new(),
                stopped: false,
            };
        }
        let delta = text[self.sent..end].to_string();
        self.sent = end;
        Delta {
            text: delta,
            stopped: false,
        }
    }

    /// The answer ended for another reason (end token, length): everything not sent yet.
    pub fn finish(&mut self, text: &str) -> String {
        if !self.consistent(text) {
            return String::new();
        }
        let rest = text[self.sent..].to_string();
        self.sent = text.len();
        rest
    }

    fn consistent(&self, text: &str) -> bool {
        text.len() >= self.sent && text.is_char_boundary(self.sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds the prefixes of `pieces` joined and returns the deltas.
    fn run(stops: &[&str], pieces: &[&str]) -> (Vec<String>, bool) {
        let mut s = TextStream::new(stops.iter().map(|s| s.to_string()).collect());
        let mut text = String::new();
        let mut out = Vec::new();
        for p in pieces {
            text.push_str(p);
            let d = s.update(&text);
            out.push(d.text);
            if d.stopped {
                return (out, true);
            }
        }
        out.push(s.finish(&text));
        (out, false)
    }

    #[test]
    fn without_stops_every_token_is_sent_at_once() {
        let (out, stopped) = run(&[], &["Hel", "lo", " world"]);
        assert_eq!(out, ["Hel", "lo", " world", ""]);
        assert!(!stopped);
    }

    #[test]
    fn a_stop_string_ends_the_answer_before_it() {
        let (out, stopped) = run(&["\n\n"], &["a", "b\n", "\nc"]);
        assert_eq!(out, ["a", "b", ""]);
        assert!(stopped);
    }

    #[test]
    fn a_partial_stop_is_held_back_and_released_when_it_does_not_complete() {
        let (out, stopped) = run(&["END"], &["x E", "N", "d"]);
        assert_eq!(out, ["x ", "", "ENd", ""]);
        assert!(!stopped);
    }

    #[test]
    fn a_stop_inside_one_token_cuts_that_token() {
        let (out, stopped) = run(&["stop"], &["go", "on stop here"]);
        assert_eq!(out, ["go", "on "]);
        assert!(stopped);
    }

    #[test]
    fn the_earliest_of_several_stops_wins() {
        let (out, _) = run(&["b", "a"], &["xyab"]);
        assert_eq!(out, ["xy"]);
    }

    #[test]
    fn incomplete_characters_wait_for_the_next_token() {
        let (out, _) = run(&[], &["a\u{FFFD}", ""]);
        assert_eq!(out, ["a", "", "\u{FFFD}"]);
        let mut s = TextStream::new(vec![]);
        assert_eq!(s.update("a\u{FFFD}").text, "a");
        assert_eq!(s.update("aé").text, "é");
    }

    #[test]
    fn multibyte_stops_are_matched_on_character_boundaries() {
        let (out, stopped) = run(&["éé"], &["caf", "é", "é!"]);
        assert_eq!(out, ["caf", "", ""]);
        assert!(stopped);
    }
}

//! Command-line tools for people running telbus. Each tool is a binary under `src/bin/`;
//! what they share lives here.

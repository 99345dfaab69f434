//! telbus access decisions (see the policy issue); filled in by the policy work.

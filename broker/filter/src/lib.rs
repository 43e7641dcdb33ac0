//! Filter expressions (being built: SQL92 subset over message properties).

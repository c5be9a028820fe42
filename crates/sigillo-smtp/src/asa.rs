//! PIX/ASA `inspect esmtp` rewriting (placeholder, see testkit helper).

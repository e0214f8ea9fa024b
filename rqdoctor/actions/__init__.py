"""The only writes rqdoctor makes: acting on findings' remedies, behind ``stuck --kill``, verified and audited."""

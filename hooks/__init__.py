"""What a push (or a config change, rollback, scale, restart) sets off."""

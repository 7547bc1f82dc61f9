"""Model zoo: transformer configs by name, built with random init and a fixed seed."""

"""The ground: settings, errors and the policies every layer shares. Imports nothing of ours."""

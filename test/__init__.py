# Makes test/ a package so that "python3 -m unittest test/test_mock_metronome.py"
# finds our tests rather than the standard library's "test" package.

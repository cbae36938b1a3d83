public enum PlaceholderNetnsKit {}
